//! LXC config reader and container profile renderer: any config gives a
//! clear error or a profile whose bind rules are each one exact path or one
//! directory tree, declared once under aa-virt's own name.
#![no_main]

use std::sync::OnceLock;

use aa_virt::policy::Templates;
use aa_virt_fuzz::fuzzcheck;
use libfuzzer_sys::fuzz_target;

struct Env {
    templates: Templates,
    _dir: tempfile::TempDir,
    lxcpath: std::path::PathBuf,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().expect("scratch dir");
        let lxcpath = dir.path().canonicalize().expect("canonical scratch dir");
        fuzzcheck::scratch_tree(&lxcpath);
        Env {
            templates: Templates::load(None).expect("built-in templates"),
            _dir: dir,
            lxcpath,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    let _ = fuzzcheck::lxc_config(data, &e.templates, &e.lxcpath);
});
