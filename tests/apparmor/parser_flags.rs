//! `apparmor::parser::COMPILE_FLAGS` makes compiles faster and must not
//! change what is compiled: every golden domain and every shipped example is
//! rendered, laid out as aa-virt installs it, and compiled by the real
//! `apparmor_parser` twice, with and without the flags. The two binary
//! policies must be byte for byte the same.

use std::path::{Path, PathBuf};
use std::process::Command;

use aa_virt::apparmor::parser::{COMPILE_FLAGS, SHIPPED_FEATURES};
use aa_virt::libvirt::{self, profile, ReadOptions};
use aa_virt::policy::Templates;

fn xmls() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = Vec::new();
    for dir in ["tests/golden", "examples"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "xml") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// The compiled policy for `prof`, with `flags` added.
fn compile(dir: &Path, prof: &Path, flags: &[&str]) -> Vec<u8> {
    let out = dir.join("out.bin");
    let o = Command::new("apparmor_parser")
        .args(["--skip-kernel-load", "--skip-cache", "--quiet"])
        .args(["--features-file", SHIPPED_FEATURES])
        .args(flags)
        .arg("-I")
        .arg(dir)
        .arg("-o")
        .arg(&out)
        .arg(prof)
        .output()
        .expect("apparmor_parser (Debian package apparmor) must be installed");
    assert!(
        o.status.success(),
        "{}: {}",
        prof.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(&out).unwrap()
}

#[test]
fn compile_flags_do_not_change_the_compiled_policy() {
    let templates = Templates::load(None).unwrap();
    let list = xmls();
    assert!(
        list.len() >= 8,
        "expected goldens and examples, found {list:?}"
    );
    for xml in list {
        let guest = libvirt::parse(
            &std::fs::read_to_string(&xml).unwrap(),
            &ReadOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", xml.display()));
        let r = profile::render(&guest, &templates, false).unwrap();
        let d = tempfile::tempdir().unwrap();
        let prof = profile::lay_out(d.path(), &[(&guest, &r)], &templates).unwrap();
        let prof = &prof[0];
        let plain = compile(d.path(), prof, &[]);
        let fast = compile(d.path(), prof, COMPILE_FLAGS);
        assert!(
            plain.len() > 1000,
            "{}: suspiciously small policy",
            xml.display()
        );
        assert!(
            plain == fast,
            "{}: {COMPILE_FLAGS:?} changed the compiled policy ({} vs {} bytes)",
            xml.display(),
            plain.len(),
            fast.len()
        );
    }
}
