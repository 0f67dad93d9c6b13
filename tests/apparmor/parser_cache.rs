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
use std::path::Path;

use aa_virt::apparmor::parser::INPUTS_DIR;
use aa_virt::apparmor::Parser;

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
    p.cache = Some(dir.join("cache"));
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

#[test]
fn the_cache_is_read_only_for_the_inputs_it_was_written_for() {
    let d = tempfile::tempdir().unwrap();
    let pol = d.path().join("policy");
    std::fs::create_dir_all(pol.join("local")).unwrap();
    let prof = pol.join("guest");
    std::fs::write(
        &prof,
        "abi <abi/3.0>,\nprofile guest {\n  /etc/hosts r,\n  include if exists <local/guest>\n}\n",
    )
    .unwrap();
    let local = pol.join("local/guest");
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
    let rec = d.path().join("cache").join(INPUTS_DIR).join("guest");
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
