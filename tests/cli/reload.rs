//! `aa-virt reload` against a profile tree in a temp dir (`AA_VIRT_ROOT`)
//! and a fake kernel (`AA_VIRT_SYSROOT`, found there by its marker): its securityfs
//! says which profiles are loaded, and its loads compile every
//! replaced profile with the real apparmor_parser and records the load. The
//! guest names come from libvirt's in-process test driver
//! (`test:///default` has one running domain, `test`).

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aa_virt::apparmor::KernelStatus;
use aa_virt::libvirt::profile::Layout;
use aa_virt::policy::Templates;

/// The UUID of `test:///default`'s domain `test`.
const TEST_UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";
/// Two guests libvirt does not list (found by their profile files).
const B_UUID: &str = "7a3c0f42-5b6d-4e8f-9a1b-2c3d4e5f6071";
const C_UUID: &str = "0b1c2d3e-4f50-4617-8899-aabbccddeeff";

struct Env {
    k: common::FakeKernel,
    root: tempfile::TempDir,
}

fn profile_name(uuid: &str) -> String {
    format!("libvirt-{uuid}")
}

impl Env {
    /// Three installed guests; the first two loaded, `C` not.
    fn new() -> Env {
        let e = Env {
            k: common::FakeKernel::new(),
            root: tempfile::tempdir().unwrap(),
        };
        for (name, uuid) in [("test", TEST_UUID), ("b", B_UUID), ("c", C_UUID)] {
            e.k.install_guest(name, uuid, &e.layout());
        }
        // C is not loaded (its guest is shut off); forget what install ran.
        let list = e.k.fs.join("profiles");
        let text = std::fs::read_to_string(&list).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with(&profile_name(C_UUID)))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&list, kept).unwrap();
        e.forget_loads();
        e
    }

    fn forget_loads(&self) {
        self.k.clear_calls();
        for u in [TEST_UUID, B_UUID, C_UUID] {
            let _ =
                std::fs::remove_file(self.k.fs.join(format!("loaded.{}.files", profile_name(u))));
        }
    }

    fn layout(&self) -> Layout {
        Layout::under(self.root.path())
    }

    fn path(&self, uuid: &str) -> PathBuf {
        self.layout().profile_path(&profile_name(uuid))
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = common::aa_virt();
        c.arg("reload")
            .args(["--connect", "test:///default"])
            .args(args)
            .env("AA_VIRT_ROOT", self.root.path())
            .env("AA_VIRT_SYSROOT", self.k.sysroot())
            .env("AA_VIRT_CONFIG", self.root.path().join("no-config.toml"))
            .env_remove("AA_VIRT_LOG")
            .env_remove("LIBVIRT_DEFAULT_URI")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// The profile files the fake kernel was asked to load, in order.
    fn replaced(&self) -> Vec<PathBuf> {
        self.k.replaced()
    }

    /// The profiles whose generated rules the (fake) kernel was given.
    fn loads(&self) -> Vec<String> {
        [TEST_UUID, B_UUID, C_UUID]
            .iter()
            .filter(|u| self.k.loaded_files(&profile_name(u)).is_some())
            .map(|u| u.to_string())
            .collect()
    }

    /// Every file below the policy directory with its content, to prove
    /// reload writes nothing there.
    fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
        fn walk(d: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)>) {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    let m = std::fs::metadata(&p).unwrap().modified().unwrap();
                    out.insert(p.clone(), (std::fs::read(&p).unwrap(), m));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.layout().apparmor_dir, &mut out);
        out
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn reloads_exactly_the_loaded_guests_from_their_files() {
    let e = Env::new();
    // The package upgraded the abstraction: the new rule must reach the
    // running guests, so it has to compile in both.
    let abs = e.layout().apparmor_dir.join("abstractions/aa-virt-qemu");
    let mut text = std::fs::read_to_string(&abs).unwrap();
    text.push_str("\n  /usr/share/aa-virt-upgrade-test/** r,\n");
    std::fs::write(&abs, text).unwrap();
    let before = e.snapshot();

    let o = e.run(&[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let mut want = vec![e.path(TEST_UUID), e.path(B_UUID)];
    want.sort();
    let mut got = e.replaced();
    got.sort();
    assert_eq!(got, want, "{err}");
    let mut loads = e.loads();
    loads.sort();
    let mut want_loads = vec![TEST_UUID.to_string(), B_UUID.to_string()];
    want_loads.sort();
    assert_eq!(loads, want_loads, "the real parser compiled both: {err}");
    // The libvirt guest is named as libvirt names it; the other by profile.
    assert!(
        err.contains(&format!("guest test: reloaded {}", profile_name(TEST_UUID))),
        "{err}"
    );
    assert!(
        err.contains(&format!("reloaded {}", profile_name(B_UUID))),
        "{err}"
    );
    assert!(!err.contains(&profile_name(C_UUID)), "{err}");
    // Same cache as the hook and helper; under the same locks.
    let log = e.k.calls().join("\n");
    let cache = e.layout().cache_dir;
    assert!(
        log.lines()
            .all(|l| l.contains(&format!("--cache-loc {}", cache.display()))),
        "{log}"
    );
    for u in [TEST_UUID, B_UUID] {
        assert!(e
            .layout()
            .lock_dir
            .join(format!("{}.lock", profile_name(u)))
            .exists());
    }
    assert_eq!(
        e.snapshot(),
        before,
        "reload wrote into the policy directory"
    );
}

#[test]
fn a_broken_local_edit_fails_only_that_guest() {
    let e = Env::new();
    let local = e
        .layout()
        .apparmor_dir
        .join("local")
        .join(profile_name(B_UUID));
    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
    std::fs::write(&local, "  /srv/data/** rw\n  this is not a rule\n").unwrap();
    let before = e.snapshot();

    let o = e.run(&[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // The other guest still reloaded, with the real parser.
    assert!(e.replaced().contains(&e.path(TEST_UUID)), "{err}");
    assert_eq!(e.loads(), vec![TEST_UUID.to_string()], "{err}");
    // The failure names the guest, its profile file and the parser's words.
    let line = err
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains(&format!("guest {}", profile_name(B_UUID))),
        "{line}"
    );
    assert!(
        line.contains(&e.path(B_UUID).display().to_string()),
        "{line}"
    );
    assert!(line.contains("keeps its previous policy"), "{line}");
    assert!(line.contains("apparmor_parser replace"), "{line}");
    assert!(line.contains(&local.display().to_string()), "{line}");
    // Still loaded (the old policy), and no file touched.
    let list = std::fs::read_to_string(e.k.fs.join("profiles")).unwrap();
    assert!(list.contains(&profile_name(B_UUID)), "{list}");
    assert_eq!(e.snapshot(), before);
}

#[test]
fn named_guests_only() {
    let e = Env::new();
    // By libvirt's name.
    let o = e.run(&["test"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(e.replaced(), vec![e.path(TEST_UUID)]);
    // By UUID (any case), then by profile name.
    e.forget_loads();
    let o = e.run(&[&B_UUID.to_uppercase()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(e.replaced(), vec![e.path(B_UUID)]);
    e.forget_loads();
    let o = e.run(&[&profile_name(B_UUID)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(e.replaced(), vec![e.path(B_UUID)]);
    assert_eq!(e.loads(), vec![B_UUID.to_string()]);
    // A guest whose profile is not loaded is left alone, and says so.
    e.forget_loads();
    let o = e.run(&[C_UUID]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(e.replaced().is_empty(), "{err}");
    assert!(err.contains("is not loaded, left alone"), "{err}");
    // An unknown guest is an error, and nothing is reloaded.
    let o = e.run(&["test", "nosuchguest"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no guest named \"nosuchguest\""), "{err}");
    assert!(e.replaced().is_empty(), "{err}");
}

#[test]
fn dry_run_replaces_nothing() {
    let e = Env::new();
    let o = e.run(&["--dry-run"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(e.k.runs(), 0, "{err}");
    assert!(e.loads().is_empty());
    for u in [TEST_UUID, B_UUID] {
        assert!(
            err.contains(&format!(
                "would reload {} from {}",
                profile_name(u),
                e.path(u).display()
            )),
            "{err}"
        );
    }
    assert!(!err.contains(&profile_name(C_UUID)), "{err}");
}

#[test]
fn waits_for_the_guests_lock() {
    let e = Env::new();
    let held = aa_virt::store::lock(&e.layout().lock_dir, &profile_name(TEST_UUID)).unwrap();
    let child = e.cmd(&["test"]).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        e.replaced().is_empty(),
        "replaced while a hook held the lock"
    );
    drop(held);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(e.replaced(), vec![e.path(TEST_UUID)]);
}

#[test]
fn no_apparmor_is_a_clear_error() {
    let e = Env::new();
    let bare = tempfile::tempdir().unwrap();
    let o = e
        .cmd(&[])
        .env("AA_VIRT_SYSROOT", bare.path())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("AppArmor not available: this kernel has no AppArmor support"),
        "{err}"
    );
    assert_eq!(e.k.runs(), 0);
    // KernelStatus is what the library reports too.
    assert!(!matches!(
        aa_virt::apparmor::securityfs::status_at(bare.path()),
        KernelStatus::Available { .. }
    ));
}

#[test]
fn reloads_an_lxc_container_with_its_own_cache_and_lock() {
    let e = Env::new();
    for tool in ["lxc-create", "busybox"] {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "{tool} is missing: install the Debian packages lxc and busybox-static"
        );
    }
    let d = tempfile::tempdir().unwrap();
    let lp = d.path().canonicalize().unwrap();
    let o = Command::new("lxc-create")
        .arg("-P")
        .arg(&lp)
        .args(["-t", "busybox", "-n", "ct1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "lxc-create: {}", stderr(&o));
    let names = aa_virt::lxc::Names::derive("ct1", &lp);
    let cfg = lp.join("ct1/config");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "lxc.apparmor.profile = {}\n",
        names.label(aa_virt::apparmor::ContainerMode::Stacked)
    ));
    std::fs::write(&cfg, text).unwrap();
    // What the pre-start hook wrote and loaded.
    let ct = aa_virt::lxc::Container::from_config_file("ct1", &cfg).unwrap();
    let r = aa_virt::lxc::profile::render(
        &ct,
        aa_virt::apparmor::ContainerMode::Stacked,
        &Templates::load(None).unwrap(),
        aa_virt::lxc::profile::RenderOptions::default(),
    )
    .unwrap();
    let lxc_layout = aa_virt::lxc::Layout::under(e.root.path());
    let file = lxc_layout.profile_path(&names);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &r.text).unwrap();
    let list = e.k.fs.join("profiles");
    let mut loaded = std::fs::read_to_string(&list).unwrap();
    loaded.push_str(&format!("{} (enforce)\n", names.profile));
    std::fs::write(&list, loaded).unwrap();

    let o = e.run(&["-P", lp.to_str().unwrap(), "ct1"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(e.replaced(), vec![file.clone()], "{err}");
    assert!(err.contains("guest ct1: reloaded"), "{err}");
    assert!(
        err.contains("(rendered again)"),
        "a container is rendered again: {err}"
    );
    let log = e.k.calls().join("\n");
    assert!(
        log.contains(&format!("--cache-loc {}", lxc_layout.cache_dir.display())),
        "{log}"
    );
    assert!(lxc_layout
        .lock_dir
        .join(format!(
            "{}.lock",
            names.profile.replace(['<', '>', '/'], "_")
        ))
        .exists());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), r.text);
}

#[test]
fn documented_in_its_man_page_and_the_readme() {
    let d = tempfile::tempdir().unwrap();
    let o = common::aa_virt()
        .arg("gen-docs")
        .arg(d.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let page = std::fs::read_to_string(d.path().join("man/aa-virt-reload.1")).unwrap();
    assert!(
        page.contains("dry\\-run") && page.contains("GUEST"),
        "{page}"
    );
    let main = std::fs::read_to_string(d.path().join("man/aa-virt.1")).unwrap();
    assert!(main.contains("aa\\-virt reload"), "EXAMPLES: {main}");
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    assert!(
        readme.contains("aa-virt reload [GUEST...]"),
        "commands list"
    );
    assert!(
        readme.contains("run `aa-virt reload`"),
        "upgrade/editing part"
    );
}
