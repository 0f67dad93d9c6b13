//! `aa-virt install --root` / `aa-virt uninstall --root` on a copy of
//! Debian's libvirt daemon profile: what is written, that the real
//! apparmor_parser compiles the result, idempotency, updates, admin edits,
//! rollback, and that uninstall removes exactly what install added.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

const DEBIAN_LIBVIRTD: &str = "/etc/apparmor.d/usr.sbin.libvirtd";

/// A target root with Debian's libvirtd profile and its empty local file
/// (as libvirt-daemon-system's postinst leaves them).
pub(crate) fn target() -> tempfile::TempDir {
    assert!(
        Path::new(DEBIAN_LIBVIRTD).exists(),
        "{DEBIAN_LIBVIRTD} is missing: install libvirt-daemon-system (CI does)"
    );
    let d = tempfile::tempdir().unwrap();
    let aa = d.path().join("etc/apparmor.d");
    std::fs::create_dir_all(aa.join("local")).unwrap();
    std::fs::copy(DEBIAN_LIBVIRTD, aa.join("usr.sbin.libvirtd")).unwrap();
    std::fs::write(aa.join("local/usr.sbin.libvirtd"), "").unwrap();
    d
}

pub(crate) fn aa_virt(args: &[&str], root: &Path) -> (bool, String) {
    aa_virt_env(args, root, &[])
}

fn aa_virt_env(args: &[&str], root: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let o = common::aa_virt()
        .args(args)
        .arg("--root")
        .arg(root)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

pub(crate) fn install(root: &Path, bin: &str) -> String {
    let (ok, out) = aa_virt(&["install", "--bin", bin], root);
    assert!(ok, "install failed:\n{out}");
    out
}

/// Every file below `root`, relative, with its content (a symlink with
/// `-> ` and its target).
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if let Ok(t) = std::fs::read_link(&p) {
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    format!("-> {}", t.display()).into_bytes(),
                ));
            } else if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v.sort();
    v
}

#[test]
fn install_writes_everything_compiles_it_and_is_idempotent() {
    let t = target();
    let r = t.path();
    let out = install(r, "/usr/bin/aa-virt");
    for f in [
        "/etc/libvirt/hooks/qemu.d/aa-virt",
        "/etc/apparmor.d/abstractions/aa-virt-qemu",
        "/etc/apparmor.d/abstractions/aa-virt-qemu-gl",
        "/etc/apparmor.d/usr.bin.aa-virt",
        "/etc/apparmor.d/local/usr.sbin.libvirtd.aa-virt",
        "/etc/aa-virt/aa-virt.toml",
        "/etc/systemd/system/aa-virt-load.service",
        "/etc/systemd/system/libvirtd.service.d/aa-virt-load.conf",
        "/etc/systemd/system/virtqemud.service.d/aa-virt-load.conf",
        "/etc/systemd/system/lxc.service.d/aa-virt-load.conf",
    ] {
        assert!(out.contains(&format!("created   {f}")), "{f}:\n{out}");
    }
    // The boot unit runs this aa-virt, after AppArmor and before the
    // daemons, each of which wants it.
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/aa-virt-load.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/aa-virt boot-load\n")
            && unit.contains("After=apparmor.service\n")
            && unit.contains("Before=libvirtd.service virtqemud.service lxc.service\n"),
        "{unit}"
    );
    let dropin =
        std::fs::read_to_string(r.join("etc/systemd/system/libvirtd.service.d/aa-virt-load.conf"))
            .unwrap();
    assert!(dropin.contains("Wants=aa-virt-load.service"), "{dropin}");
    assert!(
        out.contains("updated   /etc/apparmor.d/local/usr.sbin.libvirtd (includes"),
        "{out}"
    );
    // The real parser compiled aa-virt's profile and the daemon profile with
    // the override included.
    assert!(
        out.contains("compiles  /etc/apparmor.d/usr.bin.aa-virt"),
        "{out}"
    );
    assert!(
        out.contains("compiles  /etc/apparmor.d/usr.sbin.libvirtd"),
        "{out}"
    );
    assert!(out.contains("--root: nothing loaded"), "{out}");
    assert!(out.contains("restart libvirtd"), "{out}");

    let hook = r.join("etc/libvirt/hooks/qemu.d/aa-virt");
    let text = std::fs::read_to_string(&hook).unwrap();
    assert!(text.contains("AA_VIRT='/usr/bin/aa-virt'\n"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&hook).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let snippet =
        std::fs::read_to_string(r.join("etc/apparmor.d/local/usr.sbin.libvirtd.aa-virt")).unwrap();
    assert!(
        snippet.contains("\"/usr/bin/aa-virt\" Px -> aa-virt,"),
        "{snippet}"
    );
    let local = std::fs::read_to_string(r.join("etc/apparmor.d/local/usr.sbin.libvirtd")).unwrap();
    assert!(
        local.ends_with("include if exists <local/usr.sbin.libvirtd.aa-virt>\n"),
        "{local}"
    );
    let prof = std::fs::read_to_string(r.join("etc/apparmor.d/usr.bin.aa-virt")).unwrap();
    assert!(prof.contains("profile aa-virt flags="), "{prof}");
    assert!(
        prof.contains("\"/var/cache/aa-virt/apparmor/\" rw,"),
        "{prof}"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("etc/aa-virt/aa-virt.toml")).unwrap(),
        aa_virt::config::DEFAULT_TEXT
    );
    // The GL abstraction is the shipped text, and aa-virt's own profile may
    // write it (guest profiles are installed under that profile).
    assert_eq!(
        std::fs::read_to_string(r.join("etc/apparmor.d/abstractions/aa-virt-qemu-gl")).unwrap(),
        include_str!("../../templates/apparmor.d/abstractions/aa-virt-qemu-gl")
    );
    assert!(
        prof.contains("/etc/apparmor.d/abstractions/aa-virt-qemu{,-gl} rwl,"),
        "{prof}"
    );

    // Twice: nothing changes, not even mtimes' content.
    let before = snapshot(r);
    let out = install(r, "/usr/bin/aa-virt");
    assert!(out.contains("nothing changed"), "{out}");
    assert!(
        !out.contains("created") && !out.contains("updated "),
        "{out}"
    );
    assert_eq!(snapshot(r), before);
}

#[test]
fn the_installed_hook_script_runs_aa_virt() {
    let t = target();
    let bin = common::BIN;
    install(t.path(), bin);
    let hook = t.path().join("etc/libvirt/hooks/qemu.d/aa-virt");
    // An unknown operation: the script execs aa-virt, which ignores it.
    let o = Command::new(&hook)
        .args(["g", "future-op", "begin", "-"])
        .env("AA_VIRT_CONFIG", "/nonexistent.toml")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    // Garbage for a real operation: aa-virt's one-line error comes back.
    let o = Command::new(&hook)
        .args(["g", "prepare", "begin", "-"])
        .env("AA_VIRT_CONFIG", "/nonexistent.toml")
        .stdin(std::fs::File::open("/dev/null").unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("aa-virt: error: prepare hook for guest g"),
        "{err}"
    );
}

#[test]
fn updates_follow_the_binary_but_never_overwrite_admin_edits() {
    let t = target();
    let r = t.path();
    install(r, "/usr/bin/aa-virt");
    // The admin edits the config and aa-virt's profile.
    let cfg = r.join("etc/aa-virt/aa-virt.toml");
    std::fs::write(&cfg, "fail = \"open\"\n").unwrap();
    let prof = r.join("etc/apparmor.d/usr.bin.aa-virt");
    let edited = std::fs::read_to_string(&prof).unwrap() + "# site tweak\n";
    std::fs::write(&prof, &edited).unwrap();

    // The binary moves: unedited files follow it, edited ones stay.
    let out = install(r, "/usr/local/bin/aa-virt");
    assert!(
        out.contains("updated   /etc/libvirt/hooks/qemu.d/aa-virt"),
        "{out}"
    );
    assert!(
        out.contains("updated   /etc/apparmor.d/local/usr.sbin.libvirtd.aa-virt"),
        "{out}"
    );
    assert!(
        out.contains("kept      /etc/apparmor.d/usr.bin.aa-virt: differs"),
        "{out}"
    );
    assert!(
        out.contains("kept      /etc/aa-virt/aa-virt.toml (exists"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&prof).unwrap(), edited);
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "fail = \"open\"\n");
    let hook = std::fs::read_to_string(r.join("etc/libvirt/hooks/qemu.d/aa-virt")).unwrap();
    assert!(hook.contains("AA_VIRT='/usr/local/bin/aa-virt'"), "{hook}");
    // The include block is added once, not twice.
    let local = std::fs::read_to_string(r.join("etc/apparmor.d/local/usr.sbin.libvirtd")).unwrap();
    assert_eq!(local.matches("include if exists").count(), 1, "{local}");

    // Uninstall removes what is still aa-virt's and says what it keeps.
    let (ok, out) = aa_virt(&["uninstall", "--bin", "/usr/local/bin/aa-virt"], r);
    assert!(ok, "{out}");
    assert!(
        out.contains("removed   /etc/libvirt/hooks/qemu.d/aa-virt"),
        "{out}"
    );
    assert!(
        out.contains("removed   /etc/apparmor.d/local/usr.sbin.libvirtd.aa-virt"),
        "{out}"
    );
    assert!(
        out.contains("kept      /etc/apparmor.d/usr.bin.aa-virt: changed since"),
        "{out}"
    );
    assert!(
        out.contains("kept      /etc/aa-virt/aa-virt.toml: changed since"),
        "{out}"
    );
    assert!(prof.exists() && cfg.exists());
    assert!(!r.join("etc/libvirt/hooks/qemu.d/aa-virt").exists());
    assert_eq!(
        std::fs::read_to_string(r.join("etc/apparmor.d/local/usr.sbin.libvirtd")).unwrap(),
        ""
    );
}

#[test]
fn uninstall_restores_the_tree_exactly() {
    let t = target();
    let r = t.path();
    // An admin's own line in the daemon's local file survives both ways.
    std::fs::write(
        r.join("etc/apparmor.d/local/usr.sbin.libvirtd"),
        "  /srv/isos/** r,",
    )
    .unwrap();
    // A virtqemud profile (newer libvirt) gets its override too.
    std::fs::write(
        r.join("etc/apparmor.d/usr.sbin.virtqemud"),
        "abi <abi/3.0>,\n#include <tunables/global>\nprofile virtqemud /usr/sbin/virtqemud {\n  #include <abstractions/base>\n  /etc/libvirt/hooks/** rmix,\n  #include <local/usr.sbin.virtqemud>\n}\n",
    )
    .unwrap();
    std::fs::write(r.join("etc/apparmor.d/local/usr.sbin.virtqemud"), "").unwrap();
    let before = snapshot(r);
    let out = install(r, "/usr/bin/aa-virt");
    assert!(
        out.contains("created   /etc/apparmor.d/local/usr.sbin.virtqemud.aa-virt"),
        "{out}"
    );
    assert!(
        out.contains("compiles  /etc/apparmor.d/usr.sbin.virtqemud"),
        "{out}"
    );
    let local = std::fs::read_to_string(r.join("etc/apparmor.d/local/usr.sbin.libvirtd")).unwrap();
    assert!(local.starts_with("  /srv/isos/** r,\n# aa-virt"), "{local}");

    let (ok, out) = aa_virt(&["uninstall", "--bin", "/usr/bin/aa-virt"], r);
    assert!(ok, "{out}");
    assert!(!out.contains("kept"), "{out}");
    for f in ["aa-virt-qemu", "aa-virt-qemu-gl"] {
        assert!(
            out.contains(&format!("removed   /etc/apparmor.d/abstractions/{f}\n")),
            "{f}:\n{out}"
        );
    }
    let mut after = snapshot(r);
    // The admin's line gained the newline install needed to append after it.
    for (p, c) in after.iter_mut() {
        if p.ends_with("local/usr.sbin.libvirtd") {
            assert_eq!(c.as_slice(), b"  /srv/isos/** r,\n");
            *c = b"  /srv/isos/** r,".to_vec();
        }
    }
    assert_eq!(after, before);
    // Twice is fine.
    let (ok, out) = aa_virt(&["uninstall", "--bin", "/usr/bin/aa-virt"], r);
    assert!(ok && out.contains("nothing changed"), "{out}");
}

#[test]
fn policy_that_does_not_compile_rolls_every_file_back() {
    // In either mode; helper mode diverts nothing either (the diversion is
    // its last step).
    for mode in ["hook", "helper"] {
        let t = helper_target();
        let r = t.path();
        std::fs::write(
            r.join("etc/apparmor.d/local/usr.sbin.libvirtd"),
            "  this is not a rule\n",
        )
        .unwrap();
        let before = snapshot(r);
        let (ok, out) = aa_virt(&["install", "--mode", mode, "--bin", "/usr/bin/aa-virt"], r);
        assert!(!ok, "{mode}: {out}");
        assert!(
            out.contains("/etc/apparmor.d/usr.sbin.libvirtd")
                && out.contains("every file was restored")
                && !out.contains("diverted"),
            "{mode}: {out}"
        );
        assert_eq!(snapshot(r), before, "{mode}");
        assert_eq!(dpkg_divert(r, &["--list"]), "", "{mode}");
    }
}

#[test]
fn a_binary_path_that_cannot_be_used_is_refused() {
    let t = target();
    let (ok, out) = aa_virt(&["install", "--bin", "relative/aa-virt"], t.path());
    assert!(!ok && out.contains("not an absolute path"), "{out}");
    let (ok, out) = aa_virt(&["install", "--bin", "/opt/it's/aa-virt"], t.path());
    assert!(!ok && out.contains("quote"), "{out}");
    let _ = common::repo();
}

#[test]
fn files_that_were_already_there_are_not_removed() {
    let t = target();
    let r = t.path();
    // A package already put the abstraction in place, identical to ours.
    let abs = r.join("etc/apparmor.d/abstractions/aa-virt-qemu");
    std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
    std::fs::write(
        &abs,
        aa_virt::policy::Templates::load(None)
            .unwrap()
            .abstraction("abstractions/aa-virt-qemu")
            .unwrap(),
    )
    .unwrap();
    let out = install(r, "/usr/bin/aa-virt");
    assert!(
        out.contains("unchanged /etc/apparmor.d/abstractions/aa-virt-qemu (already present"),
        "{out}"
    );
    let (ok, out) = aa_virt(&["uninstall", "--bin", "/usr/bin/aa-virt"], r);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "kept      /etc/apparmor.d/abstractions/aa-virt-qemu: not installed by aa-virt install"
        ),
        "{out}"
    );
    assert!(abs.exists());
    assert!(!r.join("etc/apparmor.d/usr.bin.aa-virt").exists(), "{out}");
}

// ---- helper mode: aa-virt in place of libvirt's virt-aa-helper ----

const HELPER: &str = "usr/lib/libvirt/virt-aa-helper";
const HELPER_BYTES: &[u8] = b"#!/bin/sh\n# libvirt's helper, as the package installed it\n";

/// [`target`] plus libvirt's helper and the dpkg database dpkg-divert
/// needs (`var/lib/dpkg/diversions`, empty, as on a fresh system).
fn helper_target() -> tempfile::TempDir {
    let t = target();
    let r = t.path();
    std::fs::create_dir_all(r.join("usr/lib/libvirt")).unwrap();
    std::fs::write(r.join(HELPER), HELPER_BYTES).unwrap();
    std::fs::create_dir_all(r.join("var/lib/dpkg")).unwrap();
    std::fs::write(r.join("var/lib/dpkg/diversions"), "").unwrap();
    t
}

/// The real dpkg-divert on the target's database.
fn dpkg_divert(root: &Path, args: &[&str]) -> String {
    let o = Command::new("dpkg-divert")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("dpkg-divert (package dpkg) must be installed");
    assert!(o.status.success(), "dpkg-divert {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Helper mode is in place: libvirt's helper at `.real` with its content,
/// a symlink to `bin` in its place, dpkg knows the diversion, no hook.
fn assert_helper_mode(r: &Path, bin: &str) {
    assert_eq!(
        std::fs::read(r.join(format!("{HELPER}.real"))).unwrap(),
        HELPER_BYTES
    );
    assert_eq!(
        std::fs::read_link(r.join(HELPER)).unwrap(),
        PathBuf::from(bin)
    );
    assert_eq!(
        dpkg_divert(r, &["--list"]),
        "local diversion of /usr/lib/libvirt/virt-aa-helper to /usr/lib/libvirt/virt-aa-helper.real"
    );
    assert_eq!(
        dpkg_divert(r, &["--truename", "/usr/lib/libvirt/virt-aa-helper"]),
        "/usr/lib/libvirt/virt-aa-helper.real"
    );
    assert!(!r.join("etc/libvirt/hooks/qemu.d/aa-virt").exists());
}

/// libvirt's helper is back where the package put it, undiverted.
fn assert_helper_restored(r: &Path) {
    let m = std::fs::symlink_metadata(r.join(HELPER)).unwrap();
    assert!(m.file_type().is_file(), "{m:?}");
    assert_eq!(std::fs::read(r.join(HELPER)).unwrap(), HELPER_BYTES);
    assert!(!r.join(format!("{HELPER}.real")).exists());
    assert_eq!(dpkg_divert(r, &["--list"]), "");
    assert_eq!(
        dpkg_divert(r, &["--truename", "/usr/lib/libvirt/virt-aa-helper"]),
        "/usr/lib/libvirt/virt-aa-helper"
    );
}

fn install_helper(root: &Path, bin: &str) -> String {
    let (ok, out) = aa_virt(&["install", "--mode", "helper", "--bin", bin], root);
    assert!(ok, "install --mode helper failed:\n{out}");
    out
}

#[test]
fn helper_mode_diverts_libvirts_helper_and_is_idempotent() {
    let t = helper_target();
    let r = t.path();
    let out = install_helper(r, "/usr/bin/aa-virt");
    assert!(
        out.contains(
            "diverted  /usr/lib/libvirt/virt-aa-helper to /usr/lib/libvirt/virt-aa-helper.real"
        ),
        "{out}"
    );
    assert!(
        out.contains("linked    /usr/lib/libvirt/virt-aa-helper -> /usr/bin/aa-virt"),
        "{out}"
    );
    // Everything else hook mode installs, compiled by the real parser.
    for f in [
        "/etc/apparmor.d/usr.bin.aa-virt",
        "/etc/apparmor.d/local/usr.sbin.libvirtd.aa-virt",
        "/etc/aa-virt/aa-virt.toml",
    ] {
        assert!(out.contains(&format!("created   {f}")), "{f}:\n{out}");
    }
    assert!(
        out.contains("compiles  /etc/apparmor.d/usr.sbin.libvirtd"),
        "{out}"
    );
    assert!(!out.contains("hooks/qemu.d"), "{out}");
    assert!(out.contains("restart libvirtd"), "{out}");
    assert_helper_mode(r, "/usr/bin/aa-virt");

    // Again: no second diversion, nothing written.
    let before = snapshot(r);
    let out = install_helper(r, "/usr/bin/aa-virt");
    assert!(
        out.contains("already   diverted /usr/lib/libvirt/virt-aa-helper")
            && out.contains("already   linked /usr/lib/libvirt/virt-aa-helper -> /usr/bin/aa-virt")
            && out.contains("nothing changed"),
        "{out}"
    );
    assert_eq!(snapshot(r), before);
    assert_helper_mode(r, "/usr/bin/aa-virt");

    // The binary moves: the symlink follows it, the diversion stays one.
    let out = install_helper(r, "/usr/local/bin/aa-virt");
    assert!(
        out.contains("already   diverted")
            && out.contains("linked    /usr/lib/libvirt/virt-aa-helper -> /usr/local/bin/aa-virt"),
        "{out}"
    );
    assert_helper_mode(r, "/usr/local/bin/aa-virt");
}

#[test]
fn switching_modes_moves_between_hook_and_diversion() {
    let t = helper_target();
    let r = t.path();
    // Hook mode first, then helper mode: the unchanged hook goes.
    install(r, "/usr/bin/aa-virt");
    assert!(r.join("etc/libvirt/hooks/qemu.d/aa-virt").exists());
    let out = install_helper(r, "/usr/bin/aa-virt");
    assert!(
        out.contains("removed   /etc/libvirt/hooks/qemu.d/aa-virt (helper mode"),
        "{out}"
    );
    assert_helper_mode(r, "/usr/bin/aa-virt");

    // Back to hook mode: diversion undone, libvirt's helper back, hook back.
    let (ok, out) = aa_virt(
        &["install", "--mode", "hook", "--bin", "/usr/bin/aa-virt"],
        r,
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("removed   /usr/lib/libvirt/virt-aa-helper (symlink to aa-virt)")
            && out.contains("undiverted /usr/lib/libvirt/virt-aa-helper")
            && out.contains("created   /etc/libvirt/hooks/qemu.d/aa-virt"),
        "{out}"
    );
    assert_helper_restored(r);
    let hook = std::fs::read_to_string(r.join("etc/libvirt/hooks/qemu.d/aa-virt")).unwrap();
    assert!(hook.contains("AA_VIRT='/usr/bin/aa-virt'\n"), "{hook}");
    // And hook mode again changes nothing.
    let out = install(r, "/usr/bin/aa-virt");
    assert!(out.contains("nothing changed"), "{out}");

    // An edited hook is kept (and said so) when switching to helper mode.
    let hook_path = r.join("etc/libvirt/hooks/qemu.d/aa-virt");
    std::fs::write(&hook_path, "#!/bin/sh\n# site hook\n").unwrap();
    let out = install_helper(r, "/usr/bin/aa-virt");
    assert!(
        out.contains("kept      /etc/libvirt/hooks/qemu.d/aa-virt: edited"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&hook_path).unwrap(),
        "#!/bin/sh\n# site hook\n"
    );
    assert!(std::fs::read_link(r.join(HELPER)).is_ok());
}

#[test]
fn uninstall_after_helper_mode_puts_libvirts_helper_back() {
    let t = helper_target();
    let r = t.path();
    let before = snapshot(r);
    install_helper(r, "/usr/bin/aa-virt");
    // As the package's prerm runs it: dpkg sets DPKG_MAINTSCRIPT_PACKAGE,
    // which dpkg-divert takes as the owner of a diversion unless told the
    // diversion is --local.
    let (ok, out) = aa_virt_env(
        &["uninstall", "--bin", "/usr/bin/aa-virt"],
        r,
        &[("DPKG_MAINTSCRIPT_PACKAGE", "aa-virt")],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("undiverted /usr/lib/libvirt/virt-aa-helper") && !out.contains("kept"),
        "{out}"
    );
    assert_helper_restored(r);
    // Every file aa-virt wrote is gone; dpkg-divert keeps a backup of its
    // database (diversions-old), which is dpkg's, not ours.
    let after: Vec<_> = snapshot(r)
        .into_iter()
        .filter(|(p, _)| !p.ends_with("var/lib/dpkg/diversions-old"))
        .collect();
    assert_eq!(after, before);
    assert!(!r.join("var/lib/aa-virt").exists());
}

#[test]
fn uninstall_never_removes_a_file_at_the_helper_path_that_is_not_its_symlink() {
    let t = helper_target();
    let r = t.path();
    install_helper(r, "/usr/bin/aa-virt");
    // The admin put a wrapper of their own in place of aa-virt's symlink.
    std::fs::remove_file(r.join(HELPER)).unwrap();
    std::fs::write(r.join(HELPER), "#!/bin/sh\n# admin's wrapper\n").unwrap();
    let (ok, out) = aa_virt(&["uninstall", "--bin", "/usr/bin/aa-virt"], r);
    assert!(ok, "{out}");
    assert!(
        out.contains("kept      /usr/lib/libvirt/virt-aa-helper: not aa-virt's symlink"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(r.join(HELPER)).unwrap(),
        "#!/bin/sh\n# admin's wrapper\n"
    );
    assert_eq!(
        std::fs::read(r.join(format!("{HELPER}.real"))).unwrap(),
        HELPER_BYTES
    );
    assert!(dpkg_divert(r, &["--list"]).contains("virt-aa-helper.real"));
}

#[test]
fn helper_mode_without_libvirts_helper_fails_and_changes_nothing() {
    let t = helper_target();
    let r = t.path();
    std::fs::remove_file(r.join(HELPER)).unwrap();
    let before = snapshot(r);
    let (ok, out) = aa_virt(
        &["install", "--mode", "helper", "--bin", "/usr/bin/aa-virt"],
        r,
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("/usr/lib/libvirt/virt-aa-helper")
            && out.contains("libvirt-daemon")
            && out.contains("nothing was changed"),
        "{out}"
    );
    assert_eq!(snapshot(r), before);
    assert_eq!(dpkg_divert(r, &["--list"]), "");
}
