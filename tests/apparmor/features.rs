//! `aa-virt features` against a fake securityfs tree and against this
//! machine's kernel.

use crate::common;

fn run(sysroot: Option<&std::path::Path>, args: &[&str]) -> (i32, String) {
    let mut c = common::aa_virt();
    c.arg("features").args(args);
    match sysroot {
        Some(p) => c.env("AA_VIRT_SYSROOT", p),
        None => c.env_remove("AA_VIRT_SYSROOT"),
    };
    let out = c.output().expect("run aa-virt");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn without_apparmor_says_so_and_exits_zero() {
    let d = tempfile::tempdir().unwrap();
    let (code, out) = run(Some(d.path()), &["--no-probe"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("AppArmor not available: "), "{out}");
    assert!(
        out.contains("LXC containers:        cannot be confined"),
        "{out}"
    );
}

#[test]
fn this_machine_reports_and_exits_zero() {
    let (code, out) = run(None, &[]);
    assert_eq!(code, 0, "{out}");
    let apparmor = std::path::Path::new("/sys/module/apparmor/parameters/enabled").exists();
    assert_eq!(
        out.starts_with("AppArmor not available: "),
        !apparmor,
        "{out}"
    );
    assert!(
        out.contains("parser:                AppArmor parser version"),
        "{out}"
    );
}

#[test]
fn json_from_a_fake_stacking_kernel() {
    let d = tempfile::tempdir().unwrap();
    aa_virt::apparmor::fake::FakeTree::new(d.path()).unwrap();
    aa_virt::apparmor::features::write_fake_features(d.path(), "1.2").unwrap();
    let (code, out) = run(Some(d.path()), &["--json", "--no-probe"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["available"], true);
    assert_eq!(v["stacking"], true);
    assert_eq!(v["domain_version"], "1.2");
    assert_eq!(v["mount"], true);
    assert_eq!(v["ns_stacked"], false);
}
