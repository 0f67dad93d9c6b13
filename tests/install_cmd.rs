//! `aa-virt install --root` / `aa-virt uninstall --root` on a copy of
//! Debian's libvirt daemon profile: what is written, that the real
//! apparmor_parser compiles the result, idempotency, updates, admin edits,
//! rollback, and that uninstall removes exactly what install added.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const DEBIAN_LIBVIRTD: &str = "/etc/apparmor.d/usr.sbin.libvirtd";

/// A target root with Debian's libvirtd profile and its empty local file
/// (as libvirt-daemon-system's postinst leaves them).
fn target() -> tempfile::TempDir {
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

fn aa_virt(args: &[&str], root: &Path) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_aa-virt"))
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn install(root: &Path, bin: &str) -> String {
    let (ok, out) = aa_virt(&["install", "--bin", bin], root);
    assert!(ok, "install failed:\n{out}");
    out
}

/// Every file below `root`, relative, with its content.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
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
        "/etc/apparmor.d/usr.bin.aa-virt",
        "/etc/apparmor.d/local/usr.sbin.libvirtd.aa-virt",
        "/etc/aa-virt/aa-virt.toml",
    ] {
        assert!(out.contains(&format!("created   {f}")), "{f}:\n{out}");
    }
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
    let bin = env!("CARGO_BIN_EXE_aa-virt");
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
    let t = target();
    let r = t.path();
    std::fs::write(
        r.join("etc/apparmor.d/local/usr.sbin.libvirtd"),
        "  this is not a rule\n",
    )
    .unwrap();
    let before = snapshot(r);
    let (ok, out) = aa_virt(&["install", "--bin", "/usr/bin/aa-virt"], r);
    assert!(!ok, "{out}");
    assert!(
        out.contains("/etc/apparmor.d/usr.sbin.libvirtd")
            && out.contains("every file was restored"),
        "{out}"
    );
    assert_eq!(snapshot(r), before);
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
