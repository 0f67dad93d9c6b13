//! The compiled-policy cache never brings back a rule that is gone.
//!
//! apparmor_parser trusts a cache entry newer than every file the profile
//! includes, so deleting an `include if exists` file (an admin taking a rule
//! out of `local/`) would leave the old policy in the cache and load it
//! again. `Parser::replace` keeps a digest of the preprocessed profile and
//! lets the parser read the cache only while it is unchanged. This kernel
//! has no AppArmor, so the parser itself does not cache here: a recording
//! stand-in shows which loads may read the cache, and the real parser does
//! the preprocessing. The kernel-side proof is in
//! integration-vms/suite/cases/20-libvirt-hook.sh.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aa_virt::apparmor::parser::{INPUTS_DIR, SHIPPED_FEATURES};
use aa_virt::apparmor::{Kernel, KernelStatus, Parser, Root, SystemKernel};

/// A parser that preprocesses with the real one (noting each run in
/// `preprocess.log`) and records every load.
fn recording_parser(dir: &Path) -> Parser {
    let log = dir.join("loads.log");
    let pre = dir.join("preprocess.log");
    let bin = dir.join("apparmor_parser");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" --preprocess \"*) echo >> '{}'; exec '{}' \"$@\" ;; esac\necho \"$*\" >> '{}'\n",
            pre.display(),
            Parser::new().bin.display(),
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut p = Parser::new();
    p.bin = bin;
    p.includes.push(dir.join("policy"));
    p.cache = Some(dir.join("var/cache"));
    p
}

/// Whether each recorded load was allowed to read the cache.
fn cache_reads(dir: &Path) -> Vec<bool> {
    std::fs::read_to_string(dir.join("loads.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            assert!(
                l.contains("--replace") && l.contains("--write-cache"),
                "{l}"
            );
            !l.contains("--skip-read-cache")
        })
        .collect()
}

/// How many times the parser's preprocessor ran.
fn preprocess_runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("preprocess.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// A profile `guest` under `dir`/policy including `local/guest`: the
/// profile's path and the local file's (not created).
fn guest_profile(dir: &Path) -> (PathBuf, PathBuf) {
    let pol = dir.join("policy");
    std::fs::create_dir_all(pol.join("local")).unwrap();
    let prof = pol.join("guest");
    std::fs::write(
        &prof,
        "abi <abi/3.0>,\nprofile guest {\n  /etc/hosts r,\n  include if exists <local/guest>\n}\n",
    )
    .unwrap();
    (prof, pol.join("local/guest"))
}

/// The cache file the record for `guest` names.
fn recorded_cache_file(dir: &Path) -> PathBuf {
    let rec =
        std::fs::read_to_string(dir.join("var/cache").join(INPUTS_DIR).join("guest")).unwrap();
    let rel = rec.lines().nth(1).unwrap().rsplit(' ').next().unwrap();
    dir.join("var/cache").join(rel)
}

#[test]
fn the_cache_is_read_only_for_the_inputs_it_was_written_for() {
    let d = tempfile::tempdir().unwrap();
    let (prof, local) = guest_profile(d.path());
    std::fs::write(&local, "  /srv/probe r,\n").unwrap();
    let p = recording_parser(d.path());

    p.replace(&prof).unwrap(); // first load: nothing recorded yet
    p.replace(&prof).unwrap(); // same inputs: the cache may be used
    std::fs::remove_file(&local).unwrap();
    p.replace(&prof).unwrap(); // the local/ rule is gone: compile afresh
    p.replace(&prof).unwrap(); // unchanged again
    std::fs::write(&local, "  /srv/probe r,\n").unwrap();
    p.replace(&prof).unwrap(); // back: a different policy from the last one
    assert_eq!(cache_reads(d.path()), [false, true, false, true, false]);
    // aa-virt hashed the includes itself: one parser run per load.
    assert_eq!(preprocess_runs(d.path()), 0);

    // A load that fails leaves no record, so the next one compiles.
    let rec = d.path().join("var/cache").join(INPUTS_DIR).join("guest");
    assert!(rec.exists());
    let mut broken = p.clone();
    broken.bin = "/bin/false".into();
    assert!(broken.replace(&prof).is_err());
    assert!(!rec.exists(), "a failed load must forget the record");
    p.replace(&prof).unwrap();
    assert_eq!(cache_reads(d.path()).last(), Some(&false));

    // A profile the parser cannot preprocess is never loaded from cache.
    std::fs::write(&local, "  include <does/not/exist>\n").unwrap();
    p.replace(&prof).unwrap();
    p.replace(&prof).unwrap();
    let reads = cache_reads(d.path());
    assert_eq!(&reads[reads.len() - 2..], [false, false]);
    // Its own walk gave up on the missing include and asked the parser.
    assert!(preprocess_runs(d.path()) >= 2);
}

/// A stand-in kernel for the direct load: a securityfs directory whose
/// `.replace` is a plain file (what is written to it stays there), and a
/// parser that compiles for real (compile only, Debian's features file),
/// writes the cache and notes each run.
fn direct_world(dir: &Path) -> (SystemKernel, Parser, PathBuf) {
    let fs = dir.join("securityfs");
    std::fs::create_dir_all(fs.join("features/policy")).unwrap();
    std::fs::write(fs.join("features/policy/set_load"), "yes\n").unwrap();
    std::fs::write(fs.join("profiles"), "").unwrap();
    std::fs::write(fs.join(".replace"), "").unwrap();
    let bin = dir.join("apparmor_parser");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' --skip-kernel-load --features-file {SHIPPED_FEATURES} \"$@\"\n",
            dir.join("loads.log").display(),
            Parser::new().bin.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut p = Parser::new();
    p.bin = bin;
    p.features = Some(SHIPPED_FEATURES.into());
    p.includes.push(dir.join("policy"));
    p.cache = Some(dir.join("var/cache"));
    let status = KernelStatus::Available { fs: fs.clone() };
    (SystemKernel::with_status(status, Root::new(dir)), p, fs)
}

#[test]
fn unchanged_inputs_load_the_cached_policy_without_the_parser() {
    let d = tempfile::tempdir().unwrap();
    let (prof, local) = guest_profile(d.path());
    let (k, p, fs) = direct_world(d.path());
    let runs = || cache_reads(d.path()).len();
    let replaced = || std::fs::read(fs.join(".replace")).unwrap();
    let cached = || std::fs::read(recorded_cache_file(d.path())).unwrap();

    // The cache directory and its parent do not exist yet (a host's first
    // load): they are made, so the parser caches this very first compile.
    assert!(!d.path().join("var/cache").exists());
    let first = k.replace(&p, "guest", &prof).unwrap();
    assert_eq!(
        first.inputs,
        p.inputs_digest(&prof),
        "the load returns its digest"
    );
    assert!(!first.from_cache, "a first load is compiled");
    assert_eq!(runs(), 1);
    assert!(replaced().is_empty(), "the parser loaded it");
    // Unchanged: the cached policy goes to the kernel, no parser.
    let second = k.replace(&p, "guest", &prof).unwrap();
    assert_eq!((second.inputs, second.from_cache), (first.inputs, true));
    assert_eq!(runs(), 1);
    assert!(!replaced().is_empty());
    assert_eq!(replaced(), cached());

    // A local/ rule added, then taken out again: compiled each time.
    std::fs::write(fs.join(".replace"), "").unwrap();
    std::fs::write(&local, "  /srv/probe r,\n").unwrap();
    assert!(!k.replace(&p, "guest", &prof).unwrap().from_cache);
    std::fs::remove_file(&local).unwrap();
    k.replace(&p, "guest", &prof).unwrap();
    assert_eq!(cache_reads(d.path()), [false, false, false]);
    assert!(replaced().is_empty());

    // A cache file changed behind aa-virt's back is never loaded.
    std::fs::write(recorded_cache_file(d.path()), b"not that policy").unwrap();
    assert!(!k.replace(&p, "guest", &prof).unwrap().from_cache);
    assert_eq!(runs(), 4);
    assert!(replaced().is_empty());
    k.replace(&p, "guest", &prof).unwrap();
    assert_eq!(runs(), 4, "the parser's new entry is recorded and used");
    assert_eq!(replaced(), cached());

    // A record that names no cache file (an older aa-virt wrote it): the
    // parser compiles once, and the load after is direct.
    let rec = d.path().join("var/cache").join(INPUTS_DIR).join("guest");
    let digest = std::fs::read_to_string(&rec).unwrap();
    std::fs::write(&rec, digest.lines().next().unwrap()).unwrap();
    std::fs::write(fs.join(".replace"), "").unwrap();
    k.replace(&p, "guest", &prof).unwrap();
    assert_eq!((runs(), cache_reads(d.path())[4]), (5, false));
    k.replace(&p, "guest", &prof).unwrap();
    assert_eq!(runs(), 5);
    assert_eq!(replaced(), cached());

    // A kernel that refuses the write: the parser compiles afresh.
    std::fs::remove_file(fs.join(".replace")).unwrap();
    std::fs::create_dir(fs.join(".replace")).unwrap();
    k.replace(&p, "guest", &prof).unwrap();
    assert_eq!(cache_reads(d.path()).last(), Some(&false));
    assert_eq!(runs(), 6);
    // A kernel without set_load: the parser loads (reading its cache).
    std::fs::remove_dir(fs.join(".replace")).unwrap();
    std::fs::write(fs.join(".replace"), "").unwrap();
    std::fs::remove_file(fs.join("features/policy/set_load")).unwrap();
    assert!(k.replace(&p, "guest", &prof).unwrap().from_cache);
    assert_eq!(cache_reads(d.path()).last(), Some(&true));
    assert!(replaced().is_empty());
}
