//! Hostile paths: every case is either granted exactly (the rule's DFA,
//! compiled by the real `apparmor_parser`, accepts that one path and nothing
//! else) or refused with a reason that names the guest, the device and the
//! path. Extends `tests/policy/escaping.rs` with resolution attacks: `..`,
//! symlinks into restricted places and loops, `/proc/self/...`, over-long
//! paths, restricted prefixes with suffixes, and the guest name used as a
//! path component.

use crate::common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use aa_virt::guest::{Access, Guest, GuestKind, Resource};
use aa_virt::libvirt::profile;
use aa_virt::policy::{self, RuleSet, Templates};

use common::dfa::check_language;
use common::rulecheck::{check_files_text, literal_bytes, ANY_ID};

const GUEST: &str = "hostile-guest";
const DEVICE: &str = "disk vdz";

/// What a case must do.
enum Want {
    /// Grant exactly this resolved path.
    Exact(Vec<u8>),
    /// Refuse; the message must contain each of these too.
    Refused(Vec<String>),
}

struct Case {
    path: Vec<u8>,
    access: Access,
    want: Want,
}

fn exact(p: impl AsRef<[u8]>) -> Case {
    let p = p.as_ref().to_vec();
    Case {
        access: Access::RWK,
        want: Want::Exact(p.clone()),
        path: p,
    }
}

fn exact_as(p: impl AsRef<[u8]>, resolved: impl AsRef<[u8]>) -> Case {
    Case {
        path: p.as_ref().to_vec(),
        access: Access::RWK,
        want: Want::Exact(resolved.as_ref().to_vec()),
    }
}

fn refused(p: impl AsRef<[u8]>, also: &[&str]) -> Case {
    Case {
        path: p.as_ref().to_vec(),
        access: Access::RWK,
        want: Want::Refused(also.iter().map(|s| s.to_string()).collect()),
    }
}

fn read_only(mut c: Case) -> Case {
    c.access = Access::R;
    c
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

fn cat(a: &[u8], b: &[u8]) -> Vec<u8> {
    [a, b].concat()
}

fn derive_one(name: &str, path: &[u8], access: Access) -> Result<RuleSet, policy::RuleError> {
    let mut g = Guest::new(GuestKind::Lxc, name);
    g.add(Resource::file(
        PathBuf::from(OsStr::from_bytes(path)),
        access,
        DEVICE,
    ));
    policy::derive(&g)
}

/// Run the cases: refusals are checked at once, grants are collected and
/// proved exact with the DFA oracle in batches. Returns (granted, refused).
fn run(cases: Vec<Case>) -> (usize, usize) {
    let mut grants: Vec<(String, Vec<u8>, String)> = Vec::new();
    let mut refusals = 0;
    for c in &cases {
        let shown = String::from_utf8_lossy(&c.path).into_owned();
        let res = derive_one(GUEST, &c.path, c.access);
        match (&c.want, res) {
            (Want::Exact(want), Ok(set)) => {
                assert_eq!(set.len(), 1, "{shown:?}: one rule");
                let r = &set.rules()[0];
                let got = r.pattern.exact_bytes().expect("device rule is exact");
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(want),
                    "{shown:?}: granted path"
                );
                assert_eq!(&got, want, "{shown:?}: granted bytes");
                let line = r.render();
                let text = format!("{line}  # {DEVICE}\n");
                let parsed = check_files_text(&text).unwrap_or_else(|e| panic!("{shown:?}: {e}"));
                assert_eq!(parsed[0].shape, "one path", "{shown:?}: {line}");
                assert_eq!(
                    literal_bytes(&parsed[0].inner).as_deref(),
                    Some(&want[..]),
                    "{shown:?}: independent reading of {line}"
                );
                grants.push((line, want.clone(), shown));
            }
            (Want::Exact(_), Err(e)) => panic!("{shown:?}: refused but should be granted: {e}"),
            (Want::Refused(_), Ok(set)) => panic!(
                "{shown:?}: granted {:?} but must be refused",
                set.rules().iter().map(|r| r.render()).collect::<Vec<_>>()
            ),
            (Want::Refused(also), Err(e)) => {
                let m = e.to_string();
                assert!(m.contains(GUEST), "{shown:?}: reason names no guest: {m}");
                assert!(m.contains(DEVICE), "{shown:?}: reason names no device: {m}");
                // The path as far as it prints without any quoting.
                let head: String = shown
                    .chars()
                    .take_while(|c| c.is_ascii_graphic() && !"\\\"".contains(*c) || *c == ' ')
                    .take(40)
                    .collect();
                let head = head.trim_start();
                let named = (head.len().min(12)..=head.len()).any(|n| m.contains(&head[..n]))
                    || also
                        .iter()
                        .any(|a| a.starts_with('/') && m.contains(a.as_str()));
                assert!(named, "{shown:?}: reason names no path: {m}");
                for a in also {
                    assert!(m.contains(a.as_str()), "{shown:?}: reason lacks {a:?}: {m}");
                }
                refusals += 1;
            }
        }
    }
    // Prove the grants exact, 40 rules per parser run; on failure, narrow
    // down to the rule that widened.
    for chunk in grants.chunks(40) {
        let rules: Vec<String> = chunk.iter().map(|g| g.0.clone()).collect();
        let want: Vec<Vec<u8>> = chunk.iter().map(|g| g.1.clone()).collect();
        if let Err(e) = check_language(&rules, &want) {
            for (line, w, shown) in chunk {
                if let Err(e1) = check_language(std::slice::from_ref(line), std::slice::from_ref(w))
                {
                    panic!("{shown:?}: WIDENING: {e1}");
                }
            }
            panic!("batch failed but no single rule did: {e}");
        }
    }
    (grants.len(), refusals)
}

fn base() -> (tempfile::TempDir, Vec<u8>) {
    let d = tempfile::tempdir().unwrap();
    let b = bytes(&d.path().canonicalize().unwrap());
    (d, b)
}

/// Every character AppArmor's policy language gives a meaning to, and the
/// ones it could plausibly give one to.
const SPECIAL_CHARS: &[u8] = b"*?[]{}^,\\\"@$#!()|+.~=<>;'&%:- `";

#[test]
fn every_special_character_alone_and_combined() {
    let (_d, b) = base();
    let mut cases = Vec::new();
    for &c in SPECIAL_CHARS {
        let c = [c];
        // `.` and `..` alone are path syntax, covered by the `..` cases.
        if c != *b"." {
            cases.push(exact(cat(&b, &cat(b"/", &c))));
        }
        cases.push(exact(cat(&b, &[b"/x", &c[..], b"y"].concat())));
        if c != *b"." {
            cases.push(exact(cat(&b, &[b"/", &c[..], &c[..], b"/f"].concat())));
        }
        cases.push(exact(cat(&b, &[b"/f", &c[..]].concat())));
    }
    let all: Vec<u8> = SPECIAL_CHARS.to_vec();
    let mut rev = all.clone();
    rev.reverse();
    cases.push(exact(cat(&b, &cat(b"/", &all))));
    cases.push(exact(cat(&b, &cat(b"/", &rev))));
    // Every ordered pair of specials, joined into a few long names.
    let mut pairs = Vec::new();
    for &x in SPECIAL_CHARS {
        for &y in SPECIAL_CHARS {
            pairs.extend_from_slice(&[x, y, b'_']);
        }
    }
    for chunk in pairs.chunks(200) {
        cases.push(exact(cat(&b, &cat(b"/", chunk))));
    }
    // Pseudo-random combinations (fixed seed, so failures reproduce).
    let mut s: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..60 {
        let mut name = b"/".to_vec();
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        for k in 0..(1 + s % 12) {
            let i = ((s >> (k * 5)) as usize) % SPECIAL_CHARS.len();
            name.push(SPECIAL_CHARS[i]);
        }
        cases.push(exact(cat(&b, &name)));
    }
    // Known attack strings against verbatim rule writers.
    for a in [
        &b"/**"[..],
        b"/{etc,tmp}/shadow",
        b"/[e]tc/shadow",
        b"/@{HOME}/x",
        b"/@{PROC}/1/mem",
        b"/x\" rw, /etc/shadow rw, \"/y",
        b"/x,/etc/shadow",
        b"/x\\",
        b"/x\\\\*",
        b"/a\\052b",
        b"/x r,\\n  /** rwlkm",
        b"/ -> unconfined",
        b"/x {",
        b"/}",
        b"/^/[^/]",
        b"/{,**}",
        b"/a/./b",
    ] {
        let p = cat(&b, a);
        let resolved = if a == b"/a/./b" {
            cat(&b, b"/a/b")
        } else {
            p.clone()
        };
        cases.push(exact_as(p, resolved));
    }
    let n = cases.len();
    let (g, r) = run(cases);
    assert_eq!(r, 0);
    eprintln!("specials: {n} cases, {g} granted exactly (DFA-proved), 0 widenings");
}

#[test]
fn spaces_and_non_utf8_bytes() {
    let (_d, b) = base();
    let mut cases = vec![
        exact(cat(&b, b"/ leading")),
        exact(cat(&b, b"/trailing ")),
        exact(cat(&b, b"/   ")),
        exact(cat(&b, b"/ / x / ")),
        exact(cat(&b, b"/tab\xc2\xa0nbsp")),
        exact(cat(&b, "/u2028\u{2028}x".as_bytes())),
        exact(cat(&b, "/bidi\u{202e}gpj.img".as_bytes())),
        exact(cat(&b, b"/\xff")),
        exact(cat(&b, b"/\xc0\x80overlong-nul")),
        exact(cat(&b, b"/\xed\xa0\x80surrogate")),
        exact(cat(&b, b"/\x80lone-continuation")),
        exact(cat(&b, b"/\xe6\xbctruncated")),
        exact(cat(&b, b"/\xf4\x90\x80\x80above-max")),
        exact(b" /not-absolute".as_slice()).into_refused(&["not absolute"]),
        refused(cat(&b, b"/nul\x00byte"), &["control character"]),
        refused(cat(&b, b"/cr\rx"), &["control character"]),
        refused(cat(&b, b"/esc\x1b[0m"), &["control character"]),
        refused(cat(&b, b"/del\x7f"), &["control character"]),
        exact(cat(&b, "/c1\u{85}next-line".as_bytes())),
        exact(cat(&b, b"/raw-c1\x85\x9b")),
    ];
    // Every non-ASCII byte value, raw, in one name.
    let high: Vec<u8> = (0x80..=0xffu8).collect();
    cases.push(exact(cat(&b, &cat(b"/", &high))));
    let n = cases.len();
    let (g, r) = run(cases);
    eprintln!("spaces/bytes: {n} cases, {g} granted exactly, {r} refused, 0 widenings");
}

trait IntoRefused {
    fn into_refused(self, also: &[&str]) -> Case;
}
impl IntoRefused for Case {
    fn into_refused(self, also: &[&str]) -> Case {
        refused(self.path, also)
    }
}

#[test]
fn a_path_ending_in_a_backslash_does_not_swallow_the_next_rule() {
    // apparmor_parser 3.0.8 lexes `"/a\\" rwk,\n "/b" rwk,` as one string
    // running from the first quote to the second rule's opening quote, and
    // the profile fails to compile. Backslashes are written as octal.
    let (_d, b) = base();
    let cases = vec![
        exact(cat(&b, b"/ends-in\\")),
        exact(cat(&b, b"/next")),
        exact(cat(&b, b"/two\\\\")),
        exact(cat(&b, b"/quote\"")),
        exact(cat(&b, b"/bs-quote\\\"")),
        exact(cat(&b, b"/after")),
    ];
    let (g, _) = run(cases);
    assert_eq!(g, 6);
}

#[test]
fn dot_dot_segments_resolve_like_the_kernel() {
    let (_d, b) = base();
    let bp = PathBuf::from(OsStr::from_bytes(&b));
    std::fs::create_dir(bp.join("dir")).unwrap();
    let parent = bytes(bp.parent().unwrap());
    let cases = vec![
        exact_as(cat(&b, b"/missing/../x.img"), cat(&b, b"/x.img")),
        exact_as(cat(&b, b"/dir/../x.img"), cat(&b, b"/x.img")),
        exact_as(cat(&b, b"/dir/./../dir/x.img"), cat(&b, b"/dir/x.img")),
        exact_as(cat(&b, b"/../x.img"), cat(&parent, b"/x.img")),
        exact_as(cat(&b, b"/dir/..."), cat(&b, b"/dir/...")),
        exact_as(cat(&b, b"/dir/..x"), cat(&b, b"/dir/..x")),
        exact_as(cat(&b, b"/dir/x.."), cat(&b, b"/dir/x..")),
        exact_as(b"/../../../../srv/x.img", b"/srv/x.img"),
        exact_as(b"//srv//x.img", b"/srv/x.img"),
        exact_as(b"/srv/x.img/", b"/srv/x.img"),
        refused(
            cat(&b, b"/../../../../../../../../etc/shadow"),
            &["/etc/shadow", "/etc"],
        ),
        refused(b"/etc/../etc/shadow", &["/etc/shadow"]),
        refused(b"/usr/share/OVMF/../../../etc/shadow", &["/etc/shadow"]),
        read_only(refused(
            b"/usr/share/OVMF/../../../etc/shadow",
            &["resolves to /etc/shadow"],
        )),
        refused(
            b"/var/lib/libvirt/images/../../../../etc/passwd",
            &["/etc/passwd"],
        ),
        refused(b"/srv/../proc/self/mem", &["/proc"]),
        refused(b"/./etc/./shadow", &["/etc/shadow"]),
        refused(b"//etc//shadow", &["/etc/shadow"]),
        refused(b"/tmp/../boot/vmlinuz", &["/boot"]),
        read_only(refused(b"/usr/share/OVMF/../../lib/x", &["/usr/lib/x"])),
    ];
    let n = cases.len();
    let (g, r) = run(cases);
    eprintln!("dot-dot: {n} cases, {g} granted exactly, {r} refused, 0 widenings");
}

#[test]
fn symlinks_into_restricted_places_and_loops() {
    let (_d, b) = base();
    let bp = PathBuf::from(OsStr::from_bytes(&b));
    let j = |s: &str| bp.join(s);
    std::fs::create_dir(j("images")).unwrap();
    std::fs::write(j("images/vm[1]*.img"), b"disk").unwrap();
    symlink("/etc/shadow", j("evil")).unwrap();
    symlink("/etc", j("etcdir")).unwrap();
    symlink(
        "../../../../../../../../../../etc/shadow",
        j("relative-evil"),
    )
    .unwrap();
    symlink("/proc/self/root/etc/shadow", j("via-proc")).unwrap();
    symlink("/dev/mem", j("mem")).unwrap();
    symlink("/etc/not-there-yet", j("dangling-evil")).unwrap();
    symlink("/usr/share/OVMF/OVMF_CODE.fd", j("firmware")).unwrap();
    symlink(j("images/vm[1]*.img"), j("glob-target")).unwrap();
    symlink("images", j("imgdir")).unwrap();
    symlink(j("loop-b"), j("loop-a")).unwrap();
    symlink(j("loop-a"), j("loop-b")).unwrap();
    symlink("self", j("self")).unwrap();
    symlink("/", j("root")).unwrap();
    symlink("", j("empty-target")).ok();
    // A chain of exactly 40 links resolves (the kernel's limit); 41 do not.
    for i in 0..41 {
        let next = if i == 0 {
            j("images/vm[1]*.img")
        } else {
            j(&format!("chain{}", i - 1))
        };
        symlink(next, j(&format!("chain{i}"))).unwrap();
    }
    // A link whose expansion pushes the path over PATH_MAX.
    let long_dir = format!("/{}", "d".repeat(250));
    let long_target: String = long_dir.repeat(16);
    symlink(&long_target, j("too-long")).unwrap();
    let img = cat(&b, b"/images/vm[1]*.img");
    let mut cases = vec![
        refused(
            cat(&b, b"/evil"),
            &["resolves to /etc/shadow", "host configuration"],
        ),
        refused(cat(&b, b"/etcdir/passwd"), &["resolves to /etc/passwd"]),
        refused(cat(&b, b"/relative-evil"), &["resolves to /etc/shadow"]),
        refused(cat(&b, b"/via-proc"), &["/etc/shadow"]),
        refused(
            cat(&b, b"/mem"),
            &["resolves to /dev/mem", "physical memory"],
        ),
        refused(
            cat(&b, b"/dangling-evil"),
            &["resolves to /etc/not-there-yet"],
        ),
        refused(cat(&b, b"/firmware"), &["only read"]),
        read_only(exact_as(
            cat(&b, b"/firmware"),
            b"/usr/share/OVMF/OVMF_CODE.fd",
        )),
        exact_as(cat(&b, b"/glob-target"), img.clone()),
        exact_as(cat(&b, b"/imgdir/vm[1]*.img"), img.clone()),
        exact_as(
            cat(&b, b"/imgdir/../evil-sibling"),
            cat(&b, b"/evil-sibling"),
        ),
        refused(cat(&b, b"/root/etc/shadow"), &["resolves to /etc/shadow"]),
        refused(cat(&b, b"/loop-a"), &["symbolic links"]),
        refused(cat(&b, b"/loop-b/x.img"), &["symbolic links"]),
        refused(cat(&b, b"/self"), &["symbolic links"]),
        exact_as(cat(&b, b"/chain39"), img.clone()),
        refused(cat(&b, b"/chain40"), &["symbolic links"]),
        refused(
            cat(&b, &cat(b"/too-long/", &[b'x'; 200])),
            &["limit", "/dddd"],
        ),
    ];
    if j("empty-target").symlink_metadata().is_ok() {
        cases.push(refused(cat(&b, b"/empty-target"), &[]));
    }
    let n = cases.len();
    let (g, r) = run(cases);
    eprintln!("symlinks: {n} cases, {g} granted exactly, {r} refused, 0 widenings");
}

#[test]
fn proc_self_paths_are_refused_or_resolved_out_of_proc() {
    // What /proc/self/... means depends on who opens it; aa-virt resolves
    // it as itself, so the only acceptable outcomes are a refusal or a
    // grant of a real file outside /proc.
    let (_d, b) = base();
    let bp = PathBuf::from(OsStr::from_bytes(&b));
    std::fs::write(bp.join("held.img"), b"x").unwrap();
    let held = std::fs::File::open(bp.join("held.img")).unwrap();
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    use std::os::fd::AsRawFd;
    let fd_file = format!("/proc/self/fd/{}", held.as_raw_fd());
    let fd_sock = format!("/proc/self/fd/{}", sock.as_raw_fd());
    let cases = vec![
        refused(b"/proc/self/root/etc/shadow", &["/etc/shadow"]),
        refused(b"/proc/thread-self/root/etc/shadow", &["/etc/shadow"]),
        // Resolving another process's root needs ptrace rights; either way
        // it is refused.
        refused(b"/proc/1/root/etc/shadow", &["/proc/1/root"]),
        refused(b"/proc/self/mem", &["/proc"]),
        refused(b"/proc/self/environ", &["/proc"]),
        refused(b"/proc/self/mounts", &["/proc"]),
        refused(b"/proc/sysrq-trigger", &["/proc"]),
        refused(b"/proc/self/fd/../../1/mem", &["/proc"]),
        refused(fd_sock.as_bytes(), &["not a file system path", "/proc/"]),
        exact_as(fd_file.as_bytes(), cat(&b, b"/held.img")),
        refused(b"/sys/kernel/security/apparmor/.replace", &["/sys"]),
        refused(b"/run/apparmor/x", &["AppArmor state"]),
    ];
    let n = cases.len();
    let (g, r) = run(cases);
    drop(held);
    eprintln!("/proc/self: {n} cases, {g} granted exactly, {r} refused, 0 widenings");
}

#[test]
fn paths_over_path_max_and_name_max() {
    let (_d, b) = base();
    let fill = |len: usize| {
        let mut p = cat(&b, b"/");
        while p.len() < len {
            let room = (len - p.len()).min(200);
            p.extend(std::iter::repeat_n(b'a', room));
            if p.len() < len {
                p.push(b'/');
            }
        }
        p
    };
    let at_max = fill(4095);
    let cases = vec![
        exact(at_max.clone()),
        refused(fill(4096), &["bytes long", "4095"]),
        refused(fill(100_000), &["bytes long"]),
        // One component longer than NAME_MAX: the kernel's lookup fails.
        refused(cat(&b, &cat(b"/", &[b'n'; 256])), &["File name too long"]),
        exact(cat(&b, &cat(b"/", &[b'n'; 255]))),
    ];
    let n = cases.len();
    let (g, r) = run(cases);
    eprintln!("PATH_MAX: {n} cases, {g} granted exactly, {r} refused, 0 widenings");
}

#[test]
fn restricted_prefix_plus_suffix_is_not_restricted_and_vice_versa() {
    let cases = vec![
        exact(b"/etcx"),
        exact(b"/etc.d/x.img"),
        exact(b"/etcetera/x.img"),
        exact(b"/usrx/x.img"),
        exact(b"/sysx"),
        exact(b"/proc2/x"),
        exact(b"/bootx/x.img"),
        exact(b"/dev/memx"),
        exact(b"/run/apparmorx/x"),
        exact(b"/lib64x/x"),
        refused(b"/etc", &["/etc"]),
        refused(b"/etc/", &["/etc"]),
        refused(b"/etc/x.img", &["/etc"]),
        refused(b"/usr/share/OVMFx/a.fd", &["/usr"]),
        read_only(refused(b"/usr/share/OVMFx/a.fd", &["/usr"])),
        read_only(exact(b"/usr/share/OVMF/OVMF_VARS.fd")),
        refused(b"/usr/share/OVMF/OVMF_VARS.fd", &["only read"]),
        refused(b"/dev/mem", &["physical memory"]),
        refused(b"/var/lib/apparmor/x", &["AppArmor state"]),
        refused(b"/var/cache/apparmor/x", &["AppArmor"]),
        refused(b"/lost+found/x", &["recovery"]),
        refused(b"/boot/x.img", &["/boot"]),
    ];
    let n = cases.len();
    let (g, r) = run(cases);
    eprintln!("restricted prefixes: {n} cases, {g} granted exactly, {r} refused, 0 widenings");
}

#[test]
fn guest_name_used_as_a_path_component() {
    // The guest's own name turns up in the runtime rules (log, monitor,
    // pid file) and, here, in its disk path too. Whatever it is, the
    // rendered profile compiles, every rule has a known shape, the exact
    // rules accept only their path, and the name part of the glob rules is
    // literal data.
    let (_d, b) = base();
    let t = Templates::load(None).unwrap();
    let mut tried = 0;
    let mut all_files = String::new();
    let mut names: Vec<String> = SPECIAL_CHARS
        .iter()
        .filter(|c| **c != b'.')
        .map(|&c| format!("vm{}1", c as char))
        .collect();
    names.extend(
        [
            "vm[1]*",
            "{a,b}",
            "**",
            "@{HOME}",
            " lead",
            "trail ",
            "ends\\",
            "x\" rw, ** rwk, \"",
            "...",
            "é漢",
            "a-very-long-name-that-is-longer-than-twenty-characters-{*}",
        ]
        .map(String::from),
    );
    for name in &names {
        let mut g = Guest::new(GuestKind::Qemu, name.clone());
        g.uuid = Some(uuid::Uuid::from_u128(0x1234 + tried as u128));
        g.id = Some(5);
        let disk = cat(
            &b,
            &[b"/", name.as_bytes(), b"/", name.as_bytes(), b".img"].concat(),
        );
        g.add(Resource::file(
            PathBuf::from(OsStr::from_bytes(&disk)),
            Access::RWK,
            DEVICE,
        ));
        let r = profile::render(&g, &t, false).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        let parsed = check_files_text(&r.files).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(parsed.len(), r.rules.len(), "{name:?}: one line per rule");
        let mut exact_rules = Vec::new();
        let mut want = Vec::new();
        for (line, rule) in parsed.iter().zip(r.rules.rules()) {
            match rule.pattern.exact_bytes() {
                Some(p) => {
                    assert_eq!(line.shape, "one path", "{name:?}");
                    assert_eq!(literal_bytes(&line.inner), Some(p.clone()), "{name:?}");
                    exact_rules.push(rule.render());
                    want.push(p);
                }
                None => assert_ne!(line.shape, "one path", "{name:?}"),
            }
        }
        assert!(want.contains(&disk), "{name:?}: disk rule present");
        check_language(&exact_rules, &want).unwrap_or_else(|e| panic!("{name:?}: WIDENING: {e}"));
        // The whole profile (template, abstraction, .files) for a few; the
        // .files of all of them in one profile below (one parser run).
        if tried % 16 == 0 || name.contains('"') || name.contains('\\') {
            r.check(&g, &t, &aa_virt::apparmor::Parser::new())
                .unwrap_or_else(|e| panic!("{name:?}: profile does not compile: {e}"));
        }
        all_files.push_str(&r.files);
        tried += 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let prof = dir.path().join("all-names");
    std::fs::write(
        &prof,
        format!("abi <abi/3.0>,\nprofile all-names {{\n{all_files}\n}}\n"),
    )
    .unwrap();
    aa_virt::apparmor::Parser::new()
        .check(&prof)
        .unwrap_or_else(|e| panic!("the rules of all names together do not compile: {e}"));
    // Names that cannot be one path component are refused, naming the name.
    for bad in ["a/b", "..", ".", "", "a\nb", "tab\there"] {
        let g = Guest::new(GuestKind::Qemu, bad);
        let e = policy::derive(&g).unwrap_err().to_string();
        assert!(e.contains("guest name"), "{bad:?}: {e}");
        tried += 1;
    }
    eprintln!("guest names: {tried} cases, 0 widenings");
}

#[test]
fn the_rule_checker_is_not_vacuous() {
    for bad in [
        "  \"/tmp/a*\" rwk,",
        "  \"/tmp/a?\" r,",
        "  \"/tmp/[ab]\" r,",
        "  \"/tmp/{a,b}\" r,",
        "  \"/tmp/a,b\" r,",
        "  \"/tmp/^\" r,",
        "  \"/tmp/a\\\\\" r,",
        "  \"/tmp/a\\\"b\" r,",
        "  \"/var/log/libvirt/**/x*.log\" w,",
        "  \"/srv/**/x\" r,",
        "  \"/tmp/a\" rwk, /** rwk,",
        "  /tmp/unquoted r,",
        "  \"/tmp/a\" rwk,\n/etc/shadow r,",
        "  \"/tmp/a\" rwx,",
        "  \"/tmp/\\9\" r,",
        // A `*` for an unknown domain id also matches another guest's
        // `5-x` in `domain-5-x-vm`.
        "  \"/var/lib/libvirt/qemu/domain-*-vm/*\" rw,",
        "  \"/run/libvirt/qemu/swtpm/*-vm-swtpm.sock\" rw,",
        "  \"/dev/hugepages/libvirt/qemu/*-vm/**\" rwk,",
    ] {
        assert!(check_files_text(bad).is_err(), "checker accepted {bad:?}");
    }
    for good in [
        "  \"/tmp/a\\*\\?\\[\\]\\{\\}\\,\\^\\134\\042\\377\" rwk,  # disk vda",
        "  \"/srv/share/**\" rwl,  # filesystem",
        "  \"/var/log/libvirt/**/vm\\*.log\" w,  # libvirt runtime files",
        &format!("  \"/var/lib/libvirt/qemu/domain-{ANY_ID}-vm/*\" rw,"),
        &format!("  \"/run/libvirt/qemu/swtpm/{ANY_ID}-vm-swtpm.sock\" rw,"),
        &format!("  \"/dev/hugepages/libvirt/qemu/{ANY_ID}-vm/**\" rwk,"),
        "# comment \"/**\" with anything",
    ] {
        check_files_text(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
}
