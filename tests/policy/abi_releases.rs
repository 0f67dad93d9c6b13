//! The policy ABI on both releases, with their real parsers: Debian 12's
//! `apparmor_parser` 3.0.8 on the host and Debian 13's 4.1 in the cached
//! chroot (`scripts/trixie-chroot.sh`; `make test` builds it, and a missing
//! chroot fails these tests).
//!
//! - What aa-virt reads from the ABI files agrees with what each parser
//!   compiles.
//! - Every kind of profile aa-virt writes (a libvirt guest, an LXC
//!   container, aa-virt's own) declares the ABI [`abi::choose`] picks for
//!   the release and compiles with that release's parser; profiles written
//!   on Debian 12 also compile on Debian 13 (an upgraded host keeps them).
//! - `aa-virt features` shows AppArmor 4's mediation in the chroot and
//!   still works on the host.

use crate::common::oracle;

use std::path::{Path, PathBuf};
use std::process::Command;

use aa_virt::apparmor::features::probe_rule;
use aa_virt::apparmor::{ContainerMode, Parser};
use aa_virt::libvirt::{self, profile, ReadOptions};
use aa_virt::lxc::{self, Container};
use aa_virt::policy::abi::{self, Abi, HostSupport, ProfileKind};
use aa_virt::policy::Templates;

fn root() -> PathBuf {
    oracle::Reference::trixie()
        .root
        .expect("the Debian 13 reference has a root")
}

/// Compile `files` (laid out under `dir`, which is inside `root`) with the
/// chroot's parser and its shipped features; `Err` carries its message.
fn compile_in(root: &Path, dir: &Path, files: &[PathBuf]) -> Result<(), String> {
    let inside = |p: &Path| Path::new("/").join(p.strip_prefix(root).unwrap());
    let out = Command::new("chroot")
        .arg(root)
        .args(["apparmor_parser", "-Q", "-K", "--skip-cache"])
        .args(["-M", "/usr/share/apparmor-features/features", "-I"])
        .arg(inside(dir))
        .args(["-I", "/etc/apparmor.d", "-o", "/dev/null"])
        .args(files.iter().map(|f| inside(f)))
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn scratch_in(root: &Path) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("aa-virt-abi.")
        .tempdir_in(root.join("tmp"))
        .unwrap()
}

/// Debian 12's and Debian 13's support, from each release's ABI files.
fn releases(root: &Path) -> [(&'static str, HostSupport); 2] {
    [
        (
            "Debian 12",
            HostSupport::from_files(Path::new("/etc/apparmor.d")),
        ),
        (
            "Debian 13",
            HostSupport::from_files(&root.join("etc/apparmor.d")),
        ),
    ]
}

#[test]
fn the_abi_files_agree_with_each_parser() {
    let root = root();
    let [(_, d12), (_, d13)] = releases(&root);
    assert!(!d12.abi_4_0, "Debian 12's parser ships no abi/4.0");
    assert!(d13.abi_4_0, "Debian 13's parser ships abi/4.0");
    // The host's parser agrees: it cannot compile abi 4.0.
    assert!(!probe_rule(&Parser::new(), "abi <abi/4.0>,").unwrap());
    // The chroot's can, and knows the userns rule.
    let d = scratch_in(&root);
    let p = d.path().join("probe");
    std::fs::write(&p, "abi <abi/4.0>,\nprofile probe {\n  userns,\n}\n").unwrap();
    compile_in(&root, d.path(), &[p]).expect("4.1 compiles abi 4.0 with a userns rule");
}

fn typical_guest() -> aa_virt::guest::Guest {
    let xml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/typical.xml"),
    )
    .unwrap();
    let opts = ReadOptions {
        probe_chains: false,
        ..ReadOptions::default()
    };
    libvirt::parse(&xml, &opts).unwrap()
}

#[test]
fn guest_profiles_declare_their_release_abi_and_compile_there() {
    let root = root();
    let guest = typical_guest();
    for (release, host) in releases(&root) {
        let want = abi::choose(ProfileKind::LibvirtGuest, host);
        let t = Templates::load(None).unwrap().with_host(host);
        let r = profile::render(&guest, &t, false).unwrap();
        let line = format!("\nabi <abi/{}>,\n", want.abi.version());
        assert!(r.profile.contains(&line), "{release}: {}", r.profile);
        assert!(!r.profile.contains("userns") && !r.files.contains("userns"));
        // With Debian 13's parser, whichever release rendered it.
        let d = scratch_in(&root);
        let files = profile::lay_out(d.path(), &[(&guest, &r)], &t).unwrap();
        compile_in(&root, d.path(), &files).unwrap_or_else(|e| panic!("{release} on 4.1: {e}"));
        // With Debian 12's parser, what Debian 12 renders.
        if want.abi == Abi::V3_0 {
            r.check(&guest, &t, &Parser::new())
                .unwrap_or_else(|e| panic!("{release} on 3.0.8: {e}"));
        }
    }
}

#[test]
fn container_profiles_declare_their_release_abi_and_compile_there() {
    let root = root();
    let lp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(lp.path().join("c1/rootfs")).unwrap();
    std::fs::write(
        lp.path().join("c1/config"),
        format!(
            "lxc.uts.name = c1\nlxc.rootfs.path = dir:{}/c1/rootfs\nlxc.apparmor.allow_nesting = 1\n",
            lp.path().display()
        ),
    )
    .unwrap();
    let ct = Container::open("c1", lp.path()).unwrap();
    for (release, host) in releases(&root) {
        // Debian 13's parser accepts `userns,` (the kernel side is the
        // features file's); the choice decides whether it is emitted.
        let host = HostSupport {
            userns: host.abi_4_0,
            ..host
        };
        let want = abi::choose(ProfileKind::LxcContainer, host);
        let opts = lxc::profile::RenderOptions {
            host,
            ..Default::default()
        };
        let t = Templates::load(None).unwrap();
        let r = lxc::profile::render(&ct, ContainerMode::Stacked, &t, opts).unwrap();
        let line = format!("\nabi <abi/{}>,\n", want.abi.version());
        assert!(r.text.contains(&line), "{release}");
        assert_eq!(r.text.contains("\n  userns,\n"), want.userns, "{release}");
        let d = scratch_in(&root);
        let f = d.path().join(r.names.file_name());
        std::fs::write(&f, &r.text).unwrap();
        compile_in(&root, d.path(), &[f]).unwrap_or_else(|e| panic!("{release} on 4.1: {e}"));
        if want.abi == Abi::V3_0 {
            r.check("c1", &Parser::new())
                .unwrap_or_else(|e| panic!("{release} on 3.0.8: {e}"));
        }
    }
}

/// `aa-virt install --root` inside the chroot: aa-virt's own profile, as
/// Debian 13 renders it, compiled there by `install` itself.
#[test]
fn aa_virts_own_profile_installs_on_debian_13() {
    let root = root();
    let d = scratch_in(&root);
    let aa = d.path().join("target/etc/apparmor.d");
    std::fs::create_dir_all(aa.join("local")).unwrap();
    std::fs::copy(
        root.join("etc/apparmor.d/usr.sbin.libvirtd"),
        aa.join("usr.sbin.libvirtd"),
    )
    .unwrap();
    std::fs::write(aa.join("local/usr.sbin.libvirtd"), "").unwrap();
    let bin = d.path().join("aa-virt");
    std::fs::copy(env!("CARGO_BIN_EXE_aa-virt"), &bin).unwrap();
    let inside = |p: &Path| Path::new("/").join(p.strip_prefix(&root).unwrap());
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/trixie-chroot.sh"))
        .arg("run")
        .arg(inside(&bin))
        .args(["install", "--bin", "/usr/bin/aa-virt", "--root"])
        .arg(inside(&d.path().join("target")))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("compiles  /etc/apparmor.d/usr.bin.aa-virt"),
        "{text}"
    );
    let prof = std::fs::read_to_string(aa.join("usr.bin.aa-virt")).unwrap();
    let want = abi::choose(
        ProfileKind::AaVirt,
        HostSupport::from_files(&root.join("etc/apparmor.d")),
    );
    assert!(
        prof.contains(&format!("\nabi <abi/{}>,\n", want.abi.version())),
        "{prof}"
    );
}

fn features(in_root: Option<&Path>) -> String {
    let out = match in_root {
        Some(root) => {
            let d = scratch_in(root);
            let bin = d.path().join("aa-virt");
            std::fs::copy(env!("CARGO_BIN_EXE_aa-virt"), &bin).unwrap();
            let out = Command::new(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/trixie-chroot.sh"),
            )
            .arg("run")
            .arg(Path::new("/").join(bin.strip_prefix(root).unwrap()))
            .arg("features")
            .env_remove("AA_VIRT_SYSROOT")
            .output()
            .unwrap();
            drop(d);
            out
        }
        None => Command::new(env!("CARGO_BIN_EXE_aa-virt"))
            .arg("features")
            .env_remove("AA_VIRT_SYSROOT")
            .output()
            .unwrap(),
    };
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Without AppArmor in this machine's kernel, both read the features file
/// their parser compiles against: Debian 13's is a 6.12 kernel's.
#[test]
fn features_show_apparmor_4_on_debian_13_and_still_work_on_debian_12() {
    let root = root();
    let d13 = features(Some(&root));
    for want in [
        "parser:                AppArmor parser version 4.1",
        "  rule abi/4.0:            yes",
        "  rule userns:             yes",
        "  policy ABI files:    3.0 4.0",
        "  userns:              yes",
        "  io_uring:            sqpoll override_creds",
        "  mqueue:              no",
        "  unix (fine-grained): no",
        "profiles declare:      libvirt guests abi/4.0, LXC containers abi/3.0, aa-virt abi/3.0",
    ] {
        assert!(d13.contains(want), "{want:?} not in:\n{d13}");
    }
    let d12 = features(None);
    if !Path::new("/sys/kernel/security/apparmor/features").exists() {
        for want in [
            "parser:                AppArmor parser version 3.0",
            "  rule abi/4.0:            no",
            "  policy ABI files:    3.0\n",
            "  userns:              no",
            "  io_uring:            no",
            "profiles declare:      libvirt guests abi/3.0, LXC containers abi/3.0, aa-virt abi/3.0",
        ] {
            assert!(d12.contains(want), "{want:?} not in:\n{d12}");
        }
    }
}
