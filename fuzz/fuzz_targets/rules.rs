//! Path escaper and rule renderer: a hostile guest name and hostile paths
//! (resolved against a real scratch tree with links into restricted places)
//! either give a clear error or rules that each name exactly one path.
#![no_main]

use std::sync::OnceLock;

use aa_virt::policy::Templates;
use aa_virt_fuzz::fuzzcheck;
use libfuzzer_sys::fuzz_target;

struct Env {
    templates: Templates,
    _dir: tempfile::TempDir,
    base: std::path::PathBuf,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().expect("scratch dir");
        let base = dir.path().canonicalize().expect("canonical scratch dir");
        fuzzcheck::scratch_tree(&base);
        Env {
            templates: Templates::load(None).expect("built-in templates"),
            _dir: dir,
            base,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    let _ = fuzzcheck::rules(data, &e.templates, &e.base);
});
