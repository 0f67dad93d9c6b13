//! Proof that escaped paths match themselves and nothing more.
//!
//! For every hostile file name, the rule aa-virt renders is compiled by the
//! real `apparmor_parser`, which dumps the DFA it would load into the kernel
//! (`-D dfa-graph`). The test walks that DFA: it must be a single chain of
//! transitions spelling exactly the path's bytes, ending in the one
//! accepting state. Any glob, alternation or character class that leaked
//! through would show up as a branch or a multi-byte transition.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use aa_virt::guest::{Access, Guest, GuestKind, Resource};
use aa_virt::policy;

use common::dfa::assert_exact;

/// The rule aa-virt renders for a disk at `path`.
fn disk_rule(path: &[u8]) -> Result<(String, Vec<u8>), policy::RuleError> {
    let mut g = Guest::new(GuestKind::Lxc, "hostile");
    g.add(Resource::file(
        PathBuf::from(OsStr::from_bytes(path)),
        Access::RWK,
        "disk vda",
    ));
    let set = policy::derive(&g)?;
    let r = &set.rules()[0];
    Ok((r.render(), r.pattern.exact_bytes().unwrap()))
}

const HOSTILE: &[&[u8]] = &[
    b"vm[1]*.img",
    b"vm1x.img",
    b"*",
    b"**",
    b"?",
    b"[",
    b"]",
    b"[a-z]",
    b"[^a]",
    b"{",
    b"}",
    b"{a,b}",
    b"{,}",
    b"^",
    b",",
    b"\"",
    b"\\",
    b"\\*",
    b"trailing\\",
    b"@{HOME}",
    b"@{PROC}x",
    b"$",
    b"#not a comment",
    b"!",
    b"(a|b)+.c",
    b"~=<>;'&%:",
    b" leading space",
    b"trailing space ",
    b"  ",
    b"\xff\xfe non-utf8",
    "utf8-é-漢".as_bytes(),
    b"a/**/b",
    b"x\\\"y",
    b"-> other",
    b"r, /etc/shadow r",
    b"deny",
    b"\\052octal",
];

#[test]
fn hostile_names_match_exactly_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let mut checked = 0;
    for name in HOSTILE {
        let mut path = base.as_os_str().as_bytes().to_vec();
        path.push(b'/');
        path.extend_from_slice(name);
        let (rule, bytes) =
            disk_rule(&path).unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(name)));
        // `a/**/b` resolves to itself: nothing exists there.
        assert_eq!(
            bytes,
            path,
            "resolution changed {:?}",
            String::from_utf8_lossy(name)
        );
        assert_exact(&rule, &path);
        checked += 1;
    }
    eprintln!("{checked} hostile names: each compiles to a DFA accepting exactly its own path");
}

#[test]
fn whole_path_globs_do_not_widen() {
    // The reference emits these verbatim, granting the whole file system
    // or /etc/shadow. We grant a file literally named so, or refuse.
    for p in [
        &b"/**"[..],
        b"/{etc,tmp}/shadow",
        b"/*/shadow",
        b"/tmp/../etc/shadow",
    ] {
        match disk_rule(p) {
            Ok((rule, bytes)) => {
                assert_exact(&rule, &bytes);
                assert!(!bytes.starts_with(b"/etc"), "{rule}");
            }
            Err(e) => assert!(e.to_string().contains("/etc"), "{e}"),
        }
    }
}

#[test]
fn control_characters_are_refused_naming_the_device() {
    for p in [
        &b"/tmp/a\nb"[..],
        b"/tmp/a\tb",
        b"/tmp/\x00",
        b"/tmp/\x1b[31m",
        b"/tmp/\x7f",
    ] {
        let e = disk_rule(p).unwrap_err().to_string();
        assert!(
            e.contains("disk vda") && e.contains("control character"),
            "{e}"
        );
    }
    let e = disk_rule(b"relative/x.img").unwrap_err().to_string();
    assert!(e.contains("not absolute"), "{e}");
}

#[test]
fn over_long_paths_are_refused() {
    let mut p = b"/tmp/".to_vec();
    p.extend(std::iter::repeat_n(b'a', 5000));
    let e = disk_rule(&p).unwrap_err().to_string();
    assert!(e.contains("over the kernel's limit"), "{e}");
}

#[test]
fn guest_names_are_escaped_in_runtime_rules() {
    let mut g = Guest::new(GuestKind::Qemu, "vm{a,b}[1]*?");
    g.id = Some(1);
    let set = policy::derive(&g).unwrap();
    let mon = set
        .rules()
        .iter()
        .find(|r| r.render().contains("monitor.sock"))
        .unwrap();
    let want = b"/var/lib/libvirt/qemu/domain-vm{a,b}[1]*?/monitor.sock";
    assert_eq!(mon.pattern.exact_bytes().unwrap(), want);
    assert_exact(&mon.render(), want);
}

#[test]
fn the_oracle_itself_catches_unescaped_globs() {
    // Guard against a vacuous oracle: raw globs must be caught.
    for (rule, path) in [
        (r#"  "/tmp/a*" r,"#, &b"/tmp/a*"[..]),
        (r#"  "/tmp/{a,b}" r,"#, b"/tmp/{a,b}"),
        (r#"  "/tmp/x[1]" r,"#, b"/tmp/x[1]"),
        (r#"  "/tmp/q?" r,"#, b"/tmp/q?"),
    ] {
        let caught = std::panic::catch_unwind(|| assert_exact(rule, path)).is_err();
        assert!(caught, "oracle accepted the unescaped rule {rule}");
    }
}
