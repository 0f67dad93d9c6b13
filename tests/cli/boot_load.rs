//! `aa-virt boot-load` (what aa-virt-load.service runs at boot) against a
//! profile tree in a temp dir and the fake kernel: every guest's policy is
//! loaded, one that fails is named and never stops the others, and each
//! load is logged with where the policy came from and how long it took.

use std::process::{Command, Stdio};

use aa_virt::apparmor::Kernel;
use aa_virt::libvirt::profile::Layout;

#[test]
fn loads_every_guest_and_one_failure_stops_none() {
    let k = crate::common::FakeKernel::new();
    let root = tempfile::tempdir().unwrap();
    let layout = Layout::under(root.path());
    let uuids = [
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000002",
        "00000000-0000-4000-8000-000000000003",
    ];
    for (i, u) in uuids.iter().enumerate() {
        k.install_guest(&format!("g{i}"), u, &layout);
    }
    // A reboot: nothing is loaded. An admin's broken local/ edit on g1.
    std::fs::write(k.fs.join("profiles"), "").unwrap();
    let local = layout
        .apparmor_dir
        .join("local")
        .join(format!("libvirt-{}", uuids[1]));
    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
    std::fs::write(&local, "  /x bogus,\n").unwrap();
    let before = k.runs();
    let o = Command::new(env!("CARGO_BIN_EXE_aa-virt"))
        .arg("boot-load")
        .env("AA_VIRT_ROOT", root.path())
        .env("AA_VIRT_SYSROOT", k.sysroot())
        .env("AA_VIRT_CONFIG", root.path().join("no-config.toml"))
        .env_remove("AA_VIRT_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(k.runs() - before, 3, "every guest was tried: {err}");
    for (i, u) in uuids.iter().enumerate() {
        let name = format!("libvirt-{u}");
        let loaded = k.kernel().profile_mode(&name).unwrap().is_some();
        assert_eq!(loaded, i != 1, "{name}: {err}");
        if i == 1 {
            assert!(
                err.contains(&format!("{name}: not loaded (")) && err.contains("syntax error"),
                "{err}"
            );
        } else {
            assert!(
                err.contains(&format!("{name}: compiled and loaded in ")) && err.contains(" ms"),
                "{err}"
            );
        }
    }
    assert!(err.contains("2 guest profiles loaded, 1 failed"), "{err}");
}
