//! Golden tests: representative domains in `tests/golden/*.xml` and the
//! exact `.files` text aa-virt generates for each, in `*.files`.
//!
//! A mismatch prints a diff: review it. When the change is intended, rerun
//! with `AA_VIRT_BLESS=1` to rewrite the golden files, and review the result
//! in `git diff` before committing (see tests/golden/README.md). Every
//! rendered profile is also compiled with the real `apparmor_parser`.

use std::path::{Path, PathBuf};

use aa_virt::apparmor::Parser;
use aa_virt::libvirt::{self, profile, ReadOptions};
use aa_virt::policy::Templates;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// A line diff (longest common subsequence): `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[test]
fn golden_files() {
    let dir = golden_dir();
    let bless = std::env::var_os("AA_VIRT_BLESS").is_some_and(|v| v == "1");
    let templates = Templates::load(None).expect("built-in templates");
    let parser = Parser::new();
    let mut xmls: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/golden")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    xmls.sort();
    assert!(
        xmls.len() >= 5,
        "expected the golden domains in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for xml in &xmls {
        let text = std::fs::read_to_string(xml).expect("read golden XML");
        let guest = libvirt::parse(&text, &ReadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", xml.display()));
        let r = profile::render(&guest, &templates, false)
            .unwrap_or_else(|e| panic!("{}: {e}", xml.display()));
        r.check(&guest, &templates, &parser)
            .unwrap_or_else(|e| panic!("{}: {e}", xml.display()));
        // GL guests, and only they, include the GL abstraction (checked
        // before blessing, so a bless cannot hide a wrong include).
        let stem = xml.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let gl_include = r
            .files
            .contains("  #include <abstractions/aa-virt-qemu-gl>\n");
        let want_gl = matches!(stem, "gl-virgl" | "kitchen-sink");
        assert_eq!(
            (guest.gl, gl_include),
            (want_gl, want_gl),
            "{}: (guest uses GL, .files includes abstractions/aa-virt-qemu-gl)",
            xml.display()
        );
        let golden = xml.with_extension("files");
        if bless {
            std::fs::write(&golden, &r.files).expect("write golden file");
            println!("blessed {} (review it with git diff)", golden.display());
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want != r.files {
            failures.push(format!(
                "{} differs from what aa-virt now generates:\n{}",
                golden.display(),
                diff(&want, &r.files)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nReview the diff. If the change is intended, rerun with AA_VIRT_BLESS=1 \
         and review `git diff tests/golden` before committing; never bless blindly.",
        failures.join("\n")
    );
}

#[test]
fn diff_marks_changed_lines() {
    assert_eq!(diff("a\nb\nc\n", "a\nx\nc\n"), "- b\n+ x\n");
    assert_eq!(diff("a\n", "a\nb\n"), "+ b\n");
}
