//! The slow half of the fuzz property, over the committed corpus
//! (`fuzz/corpus/<target>/`): every input that renders a profile gives one
//! that the real `apparmor_parser` compiles (template, abstraction and
//! rules together), and whose exact rules the DFA oracle proves to match
//! only their own paths. The fast half (clear error or well-formed rule
//! text) runs inside the fuzz loop; see `fuzz/README.md`.

use crate::common;

use std::path::PathBuf;

use aa_virt::apparmor::Parser;
use aa_virt::policy::Templates;

use common::dfa::check_language;
use common::fuzzcheck::{self, Outcome};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = common::repo().join("fuzz/corpus").join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "empty corpus {}", dir.display());
    v
}

/// Compile and prove every rendered outcome; returns (inputs, rendered).
fn replay(target: &str, run: impl Fn(&[u8]) -> Outcome) -> (usize, usize) {
    let t = Templates::load(None).unwrap();
    let parser = Parser::new();
    let mut rendered = 0;
    let files = corpus(target);
    for f in &files {
        let data = std::fs::read(f).unwrap();
        match run(&data) {
            Outcome::Refused(_) => {}
            Outcome::Rendered(b) => {
                let (g, r) = *b;
                r.check(&g, &t, &parser).unwrap_or_else(|e| {
                    panic!("{}: rendered profile does not compile: {e}", f.display())
                });
                let (rules, want): (Vec<String>, Vec<Vec<u8>>) = r
                    .rules
                    .rules()
                    .iter()
                    .filter_map(|r| r.pattern.exact_bytes().map(|b| (r.render(), b)))
                    .unzip();
                if !rules.is_empty() {
                    for (rs, ws) in rules.chunks(60).zip(want.chunks(60)) {
                        check_language(rs, ws)
                            .unwrap_or_else(|e| panic!("{}: WIDENING: {e}", f.display()));
                    }
                }
                rendered += 1;
            }
        }
    }
    (files.len(), rendered)
}

#[test]
fn domain_xml_corpus_compiles_and_is_exact() {
    let sysfs = tempfile::tempdir().unwrap();
    let t = Templates::load(None).unwrap();
    let (n, ok) = replay("domain_xml", |d| fuzzcheck::domain_xml(d, &t, sysfs.path()));
    assert!(ok > 0, "no corpus input renders a profile");
    eprintln!("domain_xml corpus: {n} inputs, {ok} rendered, all compile, 0 widenings");
}

#[test]
fn rules_corpus_compiles_and_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    fuzzcheck::scratch_tree(&base);
    let t = Templates::load(None).unwrap();
    let (n, ok) = replay("rules", |d| fuzzcheck::rules(d, &t, &base));
    assert!(ok > 0, "no corpus input renders a profile");
    eprintln!("rules corpus: {n} inputs, {ok} rendered, all compile, 0 widenings");
}

#[test]
fn lxc_config_corpus_compiles_and_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let lxcpath = dir.path().canonicalize().unwrap();
    fuzzcheck::scratch_tree(&lxcpath);
    let t = Templates::load(None).unwrap();
    let parser = Parser::new();
    let (mut n, mut ok) = (0, 0);
    for f in corpus("lxc_config") {
        n += 1;
        let data = std::fs::read(&f).unwrap();
        let Ok(profiles) = fuzzcheck::lxc_config(&data, &t, &lxcpath) else {
            continue;
        };
        for r in profiles {
            r.check(&r.names.profile, &parser).unwrap_or_else(|e| {
                panic!("{}: container profile does not compile: {e}", f.display())
            });
            let (rules, want): (Vec<String>, Vec<Vec<u8>>) = r
                .rules
                .rules()
                .iter()
                .filter_map(|r| r.pattern.exact_bytes().map(|b| (r.render(), b)))
                .unzip();
            if !rules.is_empty() {
                check_language(&rules, &want)
                    .unwrap_or_else(|e| panic!("{}: WIDENING: {e}", f.display()));
            }
        }
        ok += 1;
    }
    assert!(ok > 0, "no corpus config renders a profile");
    eprintln!("lxc_config corpus: {n} inputs, {ok} rendered, all compile, 0 widenings");
}

#[test]
fn image_header_corpus_parses_without_panics() {
    let (mut n, mut ok) = (0, 0);
    for f in corpus("image_header") {
        n += 1;
        if fuzzcheck::image_header(&std::fs::read(&f).unwrap()).is_ok() {
            ok += 1;
        }
    }
    assert!(ok > 0, "no corpus header parses");
    eprintln!("image_header corpus: {n} inputs, {ok} headers, the rest clear errors");
}
