//! Proof that escaped paths match themselves and nothing more.
//!
//! For every hostile file name, the rule aa-virt renders is compiled by the
//! real `apparmor_parser`, which dumps the DFA it would load into the kernel
//! (`-D dfa-graph`). The test walks that DFA: it must be a single chain of
//! transitions spelling exactly the path's bytes, ending in the one
//! accepting state. Any glob, alternation or character class that leaked
//! through would show up as a branch or a multi-byte transition.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Command;

use aa_virt::apparmor::Parser;
use aa_virt::guest::{Access, Guest, GuestKind, Resource};
use aa_virt::policy;

/// Transitions by state: (next state, byte).
type Edges = HashMap<String, Vec<(String, u8)>>;

/// Compile one rule line and return the first DFA's edges and accepting states.
fn dfa(rule: &str) -> (Edges, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("prof");
    std::fs::write(&p, format!("profile t {{\n{rule}\n}}\n")).unwrap();
    let parser = Parser::new();
    let out = Command::new(&parser.bin)
        .args(["--skip-kernel-load", "--skip-cache", "-D", "dfa-graph"])
        .args(
            parser
                .features
                .iter()
                .flat_map(|f| [OsStr::new("--features-file"), f.as_os_str()]),
        )
        .arg("-o")
        .arg("/dev/null")
        .arg(&p)
        .output()
        .expect("apparmor_parser must be installed (Debian package apparmor)");
    assert!(
        out.status.success(),
        "parser rejected {rule}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let first = text.split("digraph").nth(1).expect("no DFA dumped");
    let mut edges: Edges = HashMap::new();
    let mut accepting = Vec::new();
    let lines: Vec<&str> = first.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if let Some((from, to)) = l
            .strip_suffix('[')
            .and_then(|x| x.trim().split_once(" -> "))
        {
            let label = lines[i + 1].trim();
            let hex = label
                .trim_end_matches('"')
                .rsplit([' ', '"'])
                .next()
                .and_then(|h| h.strip_prefix("0x"))
                .unwrap_or_else(|| panic!("transition without a single byte: {label}"));
            let byte =
                u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad byte in {label}"));
            edges
                .entry(from.trim_matches('"').to_string())
                .or_default()
                .push((to.trim().trim_matches('"').to_string(), byte));
        } else if l.starts_with("\"{")
            && l.ends_with('[')
            && i + 1 < lines.len()
            && lines[i + 1].contains("label=")
        {
            accepting.push(l.trim_end_matches('[').trim().trim_matches('"').to_string());
        }
        i += 1;
    }
    (edges, accepting)
}

/// Assert the DFA accepts exactly `want`.
fn assert_exact(rule: &str, want: &[u8]) {
    let (edges, accepting) = dfa(rule);
    let mut state = "{1}".to_string();
    for (i, &b) in want.iter().enumerate() {
        let out = edges.get(&state).cloned().unwrap_or_default();
        assert_eq!(
            out.len(),
            1,
            "rule {rule}: state {state} after {:?} has {} transitions {:?}, want exactly one (byte {b:#x})",
            String::from_utf8_lossy(&want[..i]),
            out.len(),
            out
        );
        assert_eq!(
            out[0].1, b,
            "rule {rule}: byte {i} is {:#x}, want {b:#x}",
            out[0].1
        );
        state = out[0].0.clone();
    }
    assert!(
        edges.get(&state).is_none_or(|v| v.is_empty()),
        "rule {rule}: the DFA goes on after the full path: {:?}",
        edges.get(&state)
    );
    assert_eq!(
        accepting,
        vec![state.clone()],
        "rule {rule}: accepting states"
    );
}

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
