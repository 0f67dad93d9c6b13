//! `aa-virt install` where the Debian package is installed: the package
//! ships the boot unit and the daemons' drop-ins under /lib/systemd/system,
//! so install writes no second copy under /etc/systemd/system (which would
//! override the package's and outlive its upgrades), and takes back the
//! copies an install from before the package wrote, unless edited.

use std::path::Path;

use super::install::{aa_virt, install, target};

const ETC_UNIT: &str = "etc/systemd/system/aa-virt-load.service";
const DAEMONS: [&str; 3] = ["libvirtd", "virtqemud", "lxc"];

fn etc_dropin(d: &str) -> String {
    format!("etc/systemd/system/{d}.service.d/aa-virt-load.conf")
}

/// What the package puts under /lib/systemd/system (Cargo.toml's assets).
fn package_units(r: &Path) {
    let lib = r.join("lib/systemd/system");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("aa-virt-load.service"), "[Unit]\n").unwrap();
    for d in DAEMONS {
        let dir = lib.join(format!("{d}.service.d"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("aa-virt-load.conf"), "[Unit]\n").unwrap();
    }
}

#[test]
fn with_the_package_install_writes_no_second_boot_unit() {
    let t = target();
    let r = t.path();
    package_units(r);
    let out = install(r, "/usr/bin/aa-virt");
    assert!(!r.join(ETC_UNIT).exists(), "{out}");
    for d in DAEMONS {
        assert!(!r.join(etc_dropin(d)).exists(), "{d}:\n{out}");
        assert!(
            !r.join(format!("etc/systemd/system/{d}.service.d")).exists(),
            "{d}"
        );
    }
    assert!(!out.contains("systemd"), "{out}");
    // The rest is installed as without the package.
    assert!(r.join("etc/apparmor.d/usr.bin.aa-virt").is_file(), "{out}");
    let (ok, out) = aa_virt(&["install", "--bin", "/usr/bin/aa-virt"], r);
    assert!(ok && out.contains("nothing changed"), "{out}");
}

#[test]
fn installing_the_package_later_takes_back_installs_copies_but_not_edited_ones() {
    let t = target();
    let r = t.path();
    install(r, "/usr/bin/aa-virt");
    assert!(r.join(ETC_UNIT).is_file());
    // The admin changed one drop-in; then the package arrives.
    std::fs::write(r.join(etc_dropin("lxc")), "[Unit]\nWants=x.service\n").unwrap();
    package_units(r);
    let out = install(r, "/usr/bin/aa-virt");
    assert!(
        out.contains(&format!(
            "removed   /{ETC_UNIT} (the aa-virt package ships it"
        )),
        "{out}"
    );
    assert!(!r.join(ETC_UNIT).exists());
    for d in ["libvirtd", "virtqemud"] {
        assert!(!r.join(etc_dropin(d)).exists(), "{d}:\n{out}");
    }
    assert!(
        out.contains(&format!("kept      /{}: edited since", etc_dropin("lxc"))),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(r.join(etc_dropin("lxc"))).unwrap(),
        "[Unit]\nWants=x.service\n"
    );
    // Uninstall leaves the package's files and the admin's edit alone.
    let (ok, out) = aa_virt(&["uninstall", "--bin", "/usr/bin/aa-virt"], r);
    assert!(ok, "{out}");
    assert!(r.join("lib/systemd/system/aa-virt-load.service").is_file());
    assert!(r.join(etc_dropin("lxc")).is_file(), "{out}");
}
