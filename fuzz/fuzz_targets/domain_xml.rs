//! Domain XML reader: any bytes either give a clear error or a profile
//! whose every rule is one exact path or a fixed aa-virt glob.
#![no_main]

use std::sync::OnceLock;

use aa_virt::policy::Templates;
use aa_virt_fuzz::fuzzcheck;
use libfuzzer_sys::fuzz_target;

struct Env {
    templates: Templates,
    sysfs: tempfile::TempDir,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| Env {
        templates: Templates::load(None).expect("built-in templates"),
        sysfs: tempfile::tempdir().expect("scratch dir"),
    })
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    let _ = fuzzcheck::domain_xml(data, &e.templates, e.sysfs.path());
});
