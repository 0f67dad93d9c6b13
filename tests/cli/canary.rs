//! `aa-virt check`, the upgrade canary, with the real apparmor_parser
//! (3.0.8 on Debian 12) and feature-set fixtures (`tests/canary/`): every
//! managed guest's policy is compiled, nothing is loaded, a guest whose
//! policy would not compile is named with the parser's message (exit 1),
//! and the rule classes a new feature set mediates are reported per guest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aa_virt::libvirt::profile::Layout;
use serde_json::Value;

/// `test:///default`'s running domain `test`, and one libvirt does not
/// list (found by its profile file, named by its profile name).
const GUESTS: [(&str, &str); 2] = [
    ("test", "6695eb01-f6a4-8304-79aa-97f2502e193f"),
    ("b", "7a3c0f42-5b6d-4e8f-9a1b-2c3d4e5f6071"),
];

const B: &str = "libvirt-7a3c0f42-5b6d-4e8f-9a1b-2c3d4e5f6071";

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/canary")
        .join(name)
        .display()
        .to_string()
}

/// Two guests installed under a temp root (loaded into a fake kernel).
fn setup() -> (crate::common::FakeKernel, tempfile::TempDir) {
    let k = crate::common::FakeKernel::new();
    let root = tempfile::tempdir().unwrap();
    for (name, uuid) in GUESTS {
        k.install_guest(name, uuid, &Layout::under(root.path()));
    }
    (k, root)
}

fn check(k: &crate::common::FakeKernel, root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aa-virt"))
        .args(["check", "--connect", "test:///default"])
        .args(args)
        .env("AA_VIRT_ROOT", root)
        .env("AA_VIRT_SYSROOT", k.sysroot())
        .env("AA_VIRT_CONFIG", root.join("no-config.toml"))
        .env_remove("AA_VIRT_LOG")
        .env_remove("LIBVIRT_DEFAULT_URI")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn guest<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["guests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["guest"] == name)
        .unwrap_or_else(|| panic!("no guest {name} in {v}"))
}

#[test]
fn every_guest_compiles_and_a_broken_one_is_named() {
    let (k, root) = setup();
    let loads = k.runs();
    let same = ["--current-features", &fixture("features-debian12")];
    let o = check(&k, root.path(), &same);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(
        out.contains("ok    test (qemu,") && out.contains(&format!("ok    {B} (qemu)")),
        "{out}"
    );
    assert!(out.contains("0 of 2 guests would fail"), "{out}");
    assert!(!out.contains("new mediation"), "same feature set: {out}");

    // A profile libvirt's own virt-aa-helper left for a stopped guest (its
    // `.files` gone, so it cannot compile) is libvirt's, not a managed guest.
    let theirs = "libvirt-7ed25dba-ae15-485a-b0ac-bc9393f7773d";
    let theirs_path = Layout::under(root.path()).profile_path(theirs);
    std::fs::write(
        &theirs_path,
        format!(
            "#include <tunables/global>\nprofile {theirs} flags=(attach_disconnected) {{\n  #include <abstractions/libvirt-qemu>\n  #include <libvirt/{theirs}.files>\n}}\n"
        ),
    )
    .unwrap();
    let o = check(&k, root.path(), &same);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(
        !out.contains(theirs) && out.contains("0 of 2 guests would fail"),
        "{out}"
    );
    std::fs::remove_file(&theirs_path).unwrap();

    // An admin's local/ rule this parser does not know (an AppArmor 4
    // rule on 3.0.8): only that guest fails, with the parser's message.
    let local: PathBuf = Layout::under(root.path())
        .apparmor_dir
        .join("local")
        .join(format!("libvirt-{}", GUESTS[1].1));
    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
    std::fs::write(&local, "  userns,\n").unwrap();
    let mut args = same.to_vec();
    args.push("--json");
    let o = check(&k, root.path(), &args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(guest(&v, "test")["ok"], true);
    assert_eq!(guest(&v, B)["ok"], false);
    let msg = guest(&v, B)["error"].as_str().unwrap();
    assert!(
        msg.contains("syntax error") && msg.contains(&format!("local/{B}")),
        "the parser's message, naming the admin's file: {msg}"
    );
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("guest {B} (qemu)")) && err.contains("would not compile"),
        "{err}"
    );
    assert!(v["parser_version"]
        .as_str()
        .unwrap()
        .contains("AppArmor parser"));
    // Nothing was loaded.
    assert_eq!(k.runs(), loads);
}

#[test]
fn a_new_abi_is_reported_per_guest() {
    let (k, root) = setup();
    // Guest b's admin took the abi line out of its profile: it follows the
    // kernel. Guest test pins abi/3.0, as aa-virt renders it on Debian 12.
    let b_prof = Layout::under(root.path()).profile_path(B);
    let pinned = std::fs::read_to_string(&b_prof).unwrap();
    assert!(pinned.contains("abi <abi/3.0>,\n"), "{pinned}");
    std::fs::write(&b_prof, pinned.replace("abi <abi/3.0>,\n", "")).unwrap();
    let (new, old) = (fixture("features-abi4"), fixture("features-debian12"));
    let abi4 = ["--features", &new, "--current-features", &old];
    let o = check(&k, root.path(), &[&abi4[..], &["--json"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["newly_mediated"],
        serde_json::json!(["userns", "io_uring", "unix"])
    );
    let classes = |g: &Value| -> Vec<String> {
        g["new_mediation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["class"].as_str().unwrap().to_string())
            .collect()
    };
    // Without an abi line: every new class. A QEMU guest has no userns
    // rule: the new kernel would deny it.
    let b = guest(&v, B);
    assert_eq!(b["abi"], Value::Null);
    assert_eq!(classes(b), ["userns", "io_uring", "unix"]);
    assert_eq!(b["new_mediation"][0]["rules"], serde_json::json!([]));
    // Pinned to abi/3.0 (which has af_unix, not userns or io_uring): the
    // kernel leaves userns and io_uring unmediated for it; its unix rules
    // (the abstraction's, with libvirt's daemons) now count.
    let t = guest(&v, "test");
    assert_eq!(t["abi"], "abi/3.0");
    assert_eq!(classes(t), ["unix"]);
    assert_ne!(t["new_mediation"][0]["rules"], serde_json::json!([]));

    let o = check(&k, root.path(), &abi4);
    let out = text(&o.stdout);
    assert!(
        out.contains("new mediation (not in the current feature set): userns, io_uring, unix"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{B} (qemu): no userns rule: the new kernel would deny it"
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "test (qemu): its policy pins abi/3.0: userns, io_uring stay unmediated for it"
        ),
        "{out}"
    );
    assert!(!out.contains("test (qemu): no userns rule"), "{out}");
}

#[test]
fn another_parser_binary_is_used() {
    let (k, root) = setup();
    let o = check(
        &k,
        root.path(),
        &["--parser", "/nonexistent/apparmor_parser"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("/nonexistent/apparmor_parser"), "{err}");
}
