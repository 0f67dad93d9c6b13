//! Proof that escaped paths match themselves and nothing more.
//!
//! For every hostile file name, the rule aa-virt renders is compiled by the
//! real `apparmor_parser`, which dumps the DFA it would load into the kernel
//! (`-D dfa-graph`). The test walks that DFA: it must be a single chain of
//! transitions spelling exactly the path's bytes, ending in the one
//! accepting state. Any glob, alternation or character class that leaked
//! through would show up as a branch or a multi-byte transition.

use crate::common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use aa_virt::guest::{Access, Guest, GuestKind, Resource, RunPath, Scope};
use aa_virt::libvirt::profile;
use aa_virt::policy::{self, Templates};

use common::dfa::{accepts, assert_exact, try_dfa};

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

#[test]
fn unknown_domain_id_is_only_digits_in_the_compiled_dfa() {
    // Guest `vm` rendered without an id, beside a guest `x-vm` running as
    // id 5, whose paths libvirt names `5-x-vm`.
    let mut g = Guest::new(GuestKind::Qemu, "vm");
    g.uuid = Some(uuid::Uuid::from_u128(0x5eed));
    for (dir, suffix, scope) in [
        ("/run/libvirt/qemu/swtpm", "-swtpm.sock", Scope::File),
        ("/dev/hugepages/libvirt/qemu", "", Scope::Tree),
    ] {
        g.run_paths.push(RunPath {
            dir: dir.into(),
            prefix: String::new(),
            suffix: suffix.into(),
            access: Access::RWK,
            scope,
            origin: "test".into(),
        });
    }
    // The whole profile compiles with the real parser.
    let t = Templates::load(None).unwrap();
    let r = profile::render(&g, &t, false).unwrap();
    r.check(&g, &t, &aa_virt::apparmor::Parser::new())
        .unwrap_or_else(|e| panic!("profile with an unknown id does not compile: {e}"));
    let id_rules: Vec<_> = r
        .rules
        .rules()
        .iter()
        .filter(|x| x.render().contains("[1-9]"))
        .collect();
    assert_eq!(
        id_rules.len(),
        4,
        "domain dir, swtpm socket, hugepage dir and tree"
    );
    let ids = [
        "5",
        "10",
        "1234567890",
        "12345678901",
        "0",
        "05",
        "-1",
        "",
        "5-x",
        "x",
        "5/6",
    ];
    let mut probes = Vec::new();
    for id in ids {
        for tail in ["/monitor", "/a/b", "/"] {
            probes.push(format!("/var/lib/libvirt/qemu/domain-{id}-vm{tail}"));
            probes.push(format!("/dev/hugepages/libvirt/qemu/{id}-vm{tail}"));
        }
        probes.push(format!("/run/libvirt/qemu/swtpm/{id}-vm-swtpm.sock"));
    }
    let mut granted = Vec::new();
    for rule in id_rules {
        let text = rule.render();
        let (edges, accepting) = try_dfa(&text).unwrap_or_else(|e| panic!("{e}"));
        for p in &probes {
            let kernel = accepts(&edges, &accepting, p.as_bytes());
            assert_eq!(
                kernel,
                rule.pattern.matches(p.as_bytes()),
                "{text}: the parser's DFA and Pattern::matches disagree on {p}"
            );
            if kernel {
                granted.push(p.clone());
            }
        }
    }
    granted.sort();
    granted.dedup();
    for p in &granted {
        assert!(
            ["5-vm", "10-vm", "1234567890-vm"]
                .iter()
                .any(|ok| p.contains(&format!("/{ok}")) || p.contains(&format!("-{ok}"))),
            "granted a path that is not guest vm's: {p}"
        );
        assert!(!p.contains("x-vm") && !p.contains("-1-vm"), "{p}");
    }
    for want in [
        "/var/lib/libvirt/qemu/domain-5-vm/monitor",
        "/var/lib/libvirt/qemu/domain-1234567890-vm/monitor",
        "/run/libvirt/qemu/swtpm/5-vm-swtpm.sock",
        "/run/libvirt/qemu/swtpm/1234567890-vm-swtpm.sock",
        "/dev/hugepages/libvirt/qemu/5-vm/",
        "/dev/hugepages/libvirt/qemu/1234567890-vm/a/b",
    ] {
        assert!(granted.iter().any(|p| p == want), "not granted: {want}");
    }
    for never in [
        "/var/lib/libvirt/qemu/domain-5-x-vm/monitor",
        "/run/libvirt/qemu/swtpm/5-x-vm-swtpm.sock",
        "/dev/hugepages/libvirt/qemu/5-x-vm/a/b",
        "/var/lib/libvirt/qemu/domain-12345678901-vm/monitor",
        "/var/lib/libvirt/qemu/domain-05-vm/monitor",
    ] {
        assert!(!granted.iter().any(|p| p == never), "granted: {never}");
    }
    // The walker is not vacuous: the `*` aa-virt used to write compiles to
    // a DFA that does take the other guest's directory.
    let (edges, accepting) = try_dfa(r#"  "/var/lib/libvirt/qemu/domain-*-vm/*" rw,"#).unwrap();
    assert!(accepts(
        &edges,
        &accepting,
        b"/var/lib/libvirt/qemu/domain-5-x-vm/monitor"
    ));
}

#[test]
fn pattern_matching_agrees_with_the_parsers_dfa() {
    // aa-virt's glob shapes, matched by Pattern::matches (used for `-F`,
    // denial attribution and the differential test) and by the DFA the
    // parser builds, on the same probes.
    use aa_virt::policy::Pattern;
    let l = |s: &str| Pattern::literal(s.as_bytes().to_vec());
    let patterns = [
        l("/a/").glob("*"),
        l("/a/").glob("**"),
        l("/a/").glob("*").lit("x"),
        l("/a/x").glob("*"),
        l("/a/").glob("**").lit("/x"),
        l("/a/").glob("**/*").lit(".x"),
        l("/a/").glob("*").lit("/").glob("**/*"),
        l("/a/").decimal_id().lit("-x/").glob("*"),
        l("/a/").decimal_id(),
    ];
    let probes = [
        "/a",
        "/a/",
        "/a//",
        "/a/x",
        "/a/xx",
        "/a/b/x",
        "/a//x",
        "/a/.x",
        "/a/b/.x",
        "/a/b/c.x",
        "/a/b/",
        "/a/b/c",
        "/a/b/c/d",
        "/a/5-x/",
        "/a/5-x/m",
        "/a/05-x/m",
        "/a/5",
        "/a/0",
        "/a/1234567890",
        "/a/12345678901",
        "/a/-1",
    ];
    for p in &patterns {
        let text = format!("  {} r,", p.render());
        let (edges, accepting) = try_dfa(&text).unwrap_or_else(|e| panic!("{e}"));
        for probe in probes {
            assert_eq!(
                p.matches(probe.as_bytes()),
                accepts(&edges, &accepting, probe.as_bytes()),
                "{text} on {probe}"
            );
        }
    }
}
