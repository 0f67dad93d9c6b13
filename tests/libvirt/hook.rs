//! The libvirt qemu hook, driven operation by operation against a profile
//! tree in a temp dir and a fake kernel whose "load" runs the real
//! apparmor_parser (compile only). What libvirt itself does with the hook is
//! proven in `hook_libvirtd.rs`; the kernel load in integration-vms.

use crate::common;

use std::path::Path;
use std::process::Stdio;

use aa_virt::apparmor::Kernel;
use aa_virt::config::{Config, FailMode};
use aa_virt::libvirt::hook::Hook;
use aa_virt::libvirt::profile::Layout;
use aa_virt::libvirt::ReadOptions;
use aa_virt::policy::Templates;

const UUID: &str = "7a3c0f42-5b6d-4e8f-9a1b-2c3d4e5f6071";
const NAME: &str = "web 1";

fn xml(disk: &str) -> String {
    format!(
        r#"<domain type='qemu' id='7'>
  <name>{NAME}</name>
  <uuid>{UUID}</uuid>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda'/>
    </disk>
  </devices>
</domain>"#
    )
}

struct Env {
    k: common::FakeKernel,
    root: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            k: common::FakeKernel::new(),
            root: tempfile::tempdir().unwrap(),
        }
    }
    fn layout(&self) -> Layout {
        Layout::under(self.root.path())
    }
    fn hook_with(&self, config: Config, kernel: Box<dyn Kernel + Send + Sync>) -> Hook {
        let templates = Templates::load(None)
            .unwrap()
            .with_includes(config.abstractions.clone());
        Hook {
            config,
            config_path: "/etc/aa-virt/aa-virt.toml".into(),
            layout: self.layout(),
            templates,
            parser: self.k.parser(),
            kernel,
            read: ReadOptions {
                probe_chains: true,
                ..ReadOptions::default()
            },
        }
    }
    fn hook(&self) -> Hook {
        self.hook_with(Config::default(), self.k.boxed())
    }
    fn profile(&self) -> std::path::PathBuf {
        self.layout().profile_path(&format!("libvirt-{UUID}"))
    }
    fn files(&self) -> std::path::PathBuf {
        self.layout().files_path(&format!("libvirt-{UUID}"))
    }
    /// Every file under the profile directory, so tests can assert that
    /// nothing (not even a temp file) was left.
    fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.layout().libvirt_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn args(op: &str) -> Vec<String> {
    [NAME, op, "begin", "-"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn a_guest_lifecycle_creates_verifies_and_removes_its_profile() {
    let e = Env::new();
    let h = e.hook();
    let x = xml("/srv/vm/web1.img");

    let out = h.run("qemu", &args("prepare"), &x).unwrap();
    assert!(out.warnings.is_empty(), "{out:?}");
    assert!(out.stdout.is_none());
    assert!(
        out.notes[0].contains("created and loaded") && out.notes[0].contains(NAME),
        "{out:?}"
    );
    let files = std::fs::read_to_string(e.files()).unwrap();
    assert!(
        files.contains("\"/srv/vm/web1.img\" rwk,  # disk vda"),
        "{files}"
    );
    assert!(files.contains("domain-7-web 1"), "{files}");
    let profile = std::fs::read_to_string(e.profile()).unwrap();
    assert!(
        profile.contains(&format!("profile libvirt-{UUID} ")),
        "{profile}"
    );
    assert!(!profile.contains("complain"), "{profile}");
    // The fake kernel's load compiled it with the real parser and recorded it.
    assert_eq!(e.k.runs(), 1);
    assert!(std::fs::read_to_string(e.k.fs.join("profiles"))
        .unwrap()
        .contains(&format!("libvirt-{UUID} (enforce)")));

    // start, started, reconnect, attach: verified, nothing recompiled; twice is fine.
    for op in ["start", "started", "reconnect", "attach", "prepare"] {
        let out = h.run("qemu", &args(op), &x).unwrap();
        assert!(out.notes[0].contains("verified"), "{op}: {out:?}");
    }
    assert_eq!(e.k.runs(), 1);

    // The guest changed between runs (a new disk): rules rewritten, reloaded.
    let x2 = xml("/srv/vm/web1-new.img");
    let out = h.run("qemu", &args("start"), &x2).unwrap();
    assert!(out.notes[0].contains("updated and reloaded"), "{out:?}");
    assert_eq!(e.k.runs(), 2);

    // stopped: unloaded through securityfs .remove, rules removed, profile kept.
    std::fs::write(e.k.fs.join(".remove"), "").unwrap();
    let out = h.run("qemu", &args("stopped"), &x2).unwrap();
    assert!(
        out.notes[0].contains("unloaded") && out.notes[0].contains("removed"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(e.k.fs.join(".remove")).unwrap(),
        format!("libvirt-{UUID}")
    );
    assert!(!e.files().exists());
    assert!(e.profile().exists());
    // release after stopped: nothing left to do, still success.
    std::fs::write(e.k.fs.join("profiles"), "").unwrap();
    let out = h.run("qemu", &args("release"), &x2).unwrap();
    assert!(out.notes[0].contains("already gone"), "{out:?}");
    assert_eq!(e.listing(), vec![format!("libvirt-{UUID}")]);
}

#[test]
fn keep_files_keeps_the_rules_after_stop() {
    let e = Env::new();
    let cfg = Config {
        keep_files: true,
        ..Config::default()
    };
    let h = e.hook_with(cfg, e.k.boxed());
    let x = xml("/srv/vm/a.img");
    h.run("qemu", &args("prepare"), &x).unwrap();
    std::fs::write(e.k.fs.join(".remove"), "").unwrap();
    let out = h.run("qemu", &args("release"), &x).unwrap();
    assert!(out.notes[0].contains("kept (keep_files)"), "{out:?}");
    assert!(e.files().exists());
    assert_eq!(
        std::fs::read_to_string(e.k.fs.join(".remove")).unwrap(),
        format!("libvirt-{UUID}")
    );
}

#[test]
fn migrate_and_restore_echo_the_xml_unchanged_and_prepare_the_profile() {
    for op in ["migrate", "restore"] {
        let e = Env::new();
        let h = e.hook();
        let x = xml("/srv/vm/m.img") + "\n<!-- trailing bytes kept as they are -->\n";
        let out = h.run("qemu", &args(op), &x).unwrap();
        assert_eq!(out.stdout.as_deref(), Some(x.as_str()), "{op}");
        assert!(e.files().exists(), "{op}");
        assert_eq!(e.k.runs(), 1, "{op}");
    }
}

#[test]
fn unknown_operations_are_ignored_whatever_the_input() {
    let e = Env::new();
    let h = e.hook();
    let out = h
        .run("qemu", &args("some-future-op"), "not xml at all")
        .unwrap();
    assert!(out.stdout.is_none() && out.warnings.is_empty());
    assert!(out.notes[0].contains("some-future-op"), "{out:?}");
    assert!(e.listing().is_empty());
    assert_eq!(e.k.runs(), 0);
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let e = Env::new();
    let h = e.hook();
    let cases: &[(&str, String, &[&str])] = &[
        (
            "garbage",
            "\u{0}\u{1}garbage".into(),
            &["prepare hook", NAME, "does not parse"],
        ),
        (
            "empty",
            String::new(),
            &["prepare hook", NAME, "does not parse"],
        ),
        (
            "no uuid",
            xml("/srv/a.img").replace(&format!("<uuid>{UUID}</uuid>"), ""),
            &[NAME, "no <uuid>"],
        ),
        (
            "bad uuid",
            xml("/srv/a.img").replace(UUID, "not-a-uuid"),
            &[NAME, "invalid uuid"],
        ),
        (
            "other guest",
            xml("/srv/a.img").replace(NAME, "db"),
            &["for guest web 1", "is for guest db"],
        ),
        (
            "not a domain",
            "<network><name>x</name></network>".into(),
            &["not a libvirt domain"],
        ),
    ];
    for (what, input, needles) in cases {
        let err = h
            .run("qemu", &args("prepare"), input)
            .unwrap_err()
            .to_string();
        for n in *needles {
            assert!(err.contains(n), "{what}: {err:?} lacks {n:?}");
        }
        assert!(!err.contains('\n'), "{what}: not one line: {err:?}");
    }
    let err = h
        .run("lxc", &args("prepare"), &xml("/srv/a.img"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'qemu' hook only"), "{err}");
    assert!(e.listing().is_empty(), "{:?}", e.listing());
    assert_eq!(e.k.runs(), 0);
}

#[test]
fn a_restricted_disk_stops_the_start_even_when_failing_open() {
    for fail in [FailMode::Closed, FailMode::Open] {
        let e = Env::new();
        let h = e.hook_with(
            Config {
                fail,
                ..Config::default()
            },
            e.k.boxed(),
        );
        let err = h
            .run("qemu", &args("prepare"), &xml("/etc/shadow"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("prepare hook")
                && err.contains(NAME)
                && err.contains("disk vda")
                && err.contains("refusing /etc/shadow"),
            "{fail:?}: {err}"
        );
        assert!(e.listing().is_empty(), "{fail:?}: {:?}", e.listing());
        assert_eq!(e.k.runs(), 0);
    }
}

#[test]
fn a_failed_load_leaves_nothing_half_written() {
    let e = Env::new();
    let h = e.hook();
    e.k.fail_loads(true);
    let err = h
        .run("qemu", &args("prepare"), &xml("/srv/vm/x.img"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("injected failure") && err.contains(NAME),
        "{err}"
    );
    assert!(e.listing().is_empty(), "{:?}", e.listing());

    // Failing open: the same failure is one warning and the guest may start.
    let h = e.hook_with(
        Config {
            fail: FailMode::Open,
            ..Config::default()
        },
        e.k.boxed(),
    );
    let out = h
        .run("qemu", &args("prepare"), &xml("/srv/vm/x.img"))
        .unwrap();
    assert_eq!(out.warnings.len(), 1, "{out:?}");
    assert!(
        out.warnings[0].contains("UNCONFINED") && out.warnings[0].contains("injected failure"),
        "{out:?}"
    );
    assert!(e.listing().is_empty(), "{:?}", e.listing());
}

#[test]
fn without_apparmor_the_hook_refuses_or_warns_but_never_pretends() {
    let e = Env::new();
    let none = || Box::new(common::no_kernel("this kernel has no AppArmor support"));
    let h = e.hook_with(Config::default(), none());
    let err = h
        .run("qemu", &args("prepare"), &xml("/srv/vm/x.img"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("would run unconfined")
            && err.contains("no AppArmor support")
            && err.contains("fail = \"open\""),
        "{err}"
    );
    let h = e.hook_with(
        Config {
            fail: FailMode::Open,
            ..Config::default()
        },
        none(),
    );
    let out = h
        .run("qemu", &args("restore"), &xml("/srv/vm/x.img"))
        .unwrap();
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].contains(NAME) && out.warnings[0].contains("UNCONFINED"),
        "{out:?}"
    );
    assert!(out.notes.is_empty(), "{out:?}");
    assert_eq!(out.stdout, Some(xml("/srv/vm/x.img")));
    assert!(e.listing().is_empty());
    assert_eq!(e.k.runs(), 0);
}

#[test]
fn complain_mode_and_extra_abstractions_come_from_the_config() {
    let e = Env::new();
    let site = e.layout().apparmor_dir.join("abstractions/site-qemu");
    std::fs::create_dir_all(site.parent().unwrap()).unwrap();
    std::fs::write(&site, "  /srv/shared/** r,\n").unwrap();
    let cfg = Config {
        complain: vec![UUID.to_uppercase()],
        abstractions: vec!["abstractions/site-qemu".into()],
        ..Config::default()
    };
    let h = e.hook_with(cfg, e.k.boxed());
    let out = h
        .run("qemu", &args("prepare"), &xml("/srv/vm/c.img"))
        .unwrap();
    assert!(out.notes[0].contains("complain mode"), "{out:?}");
    let profile = std::fs::read_to_string(e.profile()).unwrap();
    assert!(profile.contains("complain"), "{profile}");
    let files = std::fs::read_to_string(e.files()).unwrap();
    assert!(
        files.contains("#include <abstractions/site-qemu>"),
        "{files}"
    );
    // The fake kernel compiled it, site abstraction included.
    assert_eq!(e.k.runs(), 1);
}

#[test]
fn concurrent_hooks_for_one_guest_do_not_race() {
    let e = Env::new();
    let h = e.hook();
    let x = xml("/srv/vm/r.img");
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| h.run("qemu", &args("prepare"), &x).map(|o| o.notes)))
            .collect();
        let notes: Vec<String> = hs
            .into_iter()
            .flat_map(|t| t.join().unwrap().unwrap())
            .collect();
        assert_eq!(
            notes.iter().filter(|n| n.contains("created")).count(),
            1,
            "{notes:?}"
        );
    });
    assert_eq!(e.k.runs(), 1);
    assert_eq!(
        e.listing(),
        vec![format!("libvirt-{UUID}"), format!("libvirt-{UUID}.files")]
    );
}

/// The binary: exit codes and stderr for the cases that write nothing.
#[test]
fn the_command_line_hook_exit_codes() {
    let run = |op: &str, stdin: &str| {
        let mut c = common::aa_virt()
            .args([
                "hook",
                "--config",
                "/nonexistent/aa-virt.toml",
                "qemu",
                NAME,
                op,
                "begin",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = run("brand-new-op", "garbage");
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    let (code, _, err) = run("prepare", "garbage");
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("does not parse"), "{err}");
    let (code, _, err) = run("prepare", &xml("/etc/shadow"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refusing /etc/shadow"), "{err}");
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "fail = \"closed\"\nkeep_files = 1\n").unwrap();
    let o = common::aa_virt()
        .args(["hook", "--config"])
        .arg(bad.path())
        .args(["qemu", NAME, "stopped", "end", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("line 2") && err.contains("keep_files"),
        "{err}"
    );
    assert!(Path::new(common::BIN).exists());
}
