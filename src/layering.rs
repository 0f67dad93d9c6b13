//! The module graph points one way down. This test reads the library's
//! sources and fails on any `crate::` reference from a module to one that
//! is not strictly below it, so an import that points back up (or across)
//! is caught when it is written, not in review.
//!
//! Layers, lowest first (a module may use those strictly below it):
//!
//! | rank | modules |
//! |---|---|
//! | 0 | `store` (no project imports at all) |
//! | 1 | `apparmor` (kernel and parser) |
//! | 2 | `config`, `guest` (the model) |
//! | 3 | `policy` (rules, escaping, templates) |
//! | 4 | `libvirt`, `lxc` (inputs and their hooks) |
//! | 5 | `denials`, `install`, `boot` |
//! | 6 | `list` |
//! | 7 | `reload` |
//! | 8 | `canary` (finds guests as `reload` does) |
//!
//! One leaf is usable from every layer: `policy::escape`, which imports
//! nothing of the project (the model prints paths with its display
//! escaping). The command line is not in the library at all: it lives in
//! the binary (`src/cli/`), so the compiler already refuses a library
//! import of it.

use std::path::{Path, PathBuf};

/// The layer of a top-level module, or `None` for one this table does not
/// know (a new module must be given a layer).
fn rank(module: &str) -> Option<u8> {
    Some(match module {
        "store" => 0,
        "apparmor" => 1,
        "config" | "guest" => 2,
        "policy" => 3,
        "libvirt" | "lxc" => 4,
        "denials" | "install" | "boot" => 5,
        "list" => 6,
        "reload" => 7,
        "canary" => 8,
        _ => return None,
    })
}

/// Leaf modules any layer may use: they import nothing of the project.
const LEAVES: &[&str] = &["policy::escape"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::a::b` path in the code (comments left out) of `text`.
fn crate_refs(text: &str) -> Vec<String> {
    let mut refs = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let tail = &rest[i + "crate::".len()..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            refs.push(tail[..end].trim_end_matches(':').to_string());
            rest = &tail[end..];
        }
    }
    refs
}

/// The violations in the library: `file: crate::path (why)`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap().to_string_lossy().into_owned();
        let top = rel.split(['/', '.']).next().unwrap().to_string();
        if matches!(top.as_str(), "lib" | "main" | "cli" | "layering") {
            continue; // the crate root, the binary and this test
        }
        let Some(own) = rank(&top) else {
            bad.push(format!("{rel}: module `{top}` has no layer in layering.rs"));
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        for r in crate_refs(&text) {
            let target = r.split("::").next().unwrap_or("");
            if target == top
                || LEAVES
                    .iter()
                    .any(|l| r == *l || r.starts_with(&format!("{l}::")))
            {
                continue;
            }
            match rank(target) {
                Some(t) if t < own => {}
                Some(_) => bad.push(format!("{rel}: crate::{r} points up or across")),
                None => bad.push(format!("{rel}: crate::{r}: unknown module")),
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(src.join("policy/escape.rs")) {
        for r in crate_refs(&text) {
            bad.push(format!(
                "policy/escape.rs: crate::{r}: the leaf imports the project"
            ));
        }
    }
    bad
}

#[test]
fn the_module_graph_points_one_way_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

#[test]
fn an_upward_import_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("policy")).unwrap();
    std::fs::write(src.join("store.rs"), "use crate::libvirt::x;\n").unwrap();
    std::fs::write(
        src.join("policy/rules.rs"),
        "// crate::list in a comment\nuse crate::guest::G;\n",
    )
    .unwrap();
    std::fs::write(src.join("policy/escape.rs"), "use crate::guest::G;\n").unwrap();
    std::fs::write(
        src.join("guest.rs"),
        "use crate::policy::escape::display_path;\n",
    )
    .unwrap();
    let bad = violations(src);
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(
        bad[0].contains("store.rs: crate::libvirt::x points up") || bad[1].contains("store.rs")
    );
    assert!(bad
        .iter()
        .any(|b| b.contains("the leaf imports the project")));
}
