//! LXC containers with the real tools: `lxc-create` (busybox template),
//! `aa-virt lxc enable/disable`, every hook run with the environment LXC
//! sets, `lxc-start`/`lxc-stop` on this kernel, and every profile variant
//! compiled by the real `apparmor_parser`.
//!
//! Kernel-side behaviour (labels, namespaces, denials) is proven in
//! `integration-vms/suite/cases/40-lxc.sh`; here the securityfs side is a
//! fake tree where a test needs one (`AA_VIRT_SYSROOT`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aa_virt::apparmor::fake::FakeTree;
use aa_virt::apparmor::features::write_fake_features;
use aa_virt::apparmor::userns_policy;
use aa_virt::apparmor::{ContainerMode, Parser, Root};
use aa_virt::lxc::hook::{self, HookEnv, LxcHookOutcome as Outcome, Settings};
use aa_virt::lxc::{self as lxc, profile, Container, Layout, LxcError};
use aa_virt::policy::abi::{self, ProfileKind};
use aa_virt::policy::Templates;

use crate::common;

fn need(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "{tool} is missing: install the Debian packages lxc and busybox-static (scripts/install-deps.sh)");
}

/// A busybox container `name` in a fresh lxcpath, with no network.
pub(crate) fn busybox(name: &str) -> (tempfile::TempDir, PathBuf) {
    need("lxc-create");
    need("busybox");
    let d = tempfile::tempdir().unwrap();
    let lxcpath = d.path().canonicalize().unwrap();
    let out = Command::new("lxc-create")
        .args(["-P"])
        .arg(&lxcpath)
        .args(["-t", "busybox", "-n", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lxc-create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = lxcpath.join(name).join("config");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("lxc.net.0."))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + "lxc.net.0.type = empty\n";
    std::fs::write(&cfg, text).unwrap();
    (d, lxcpath)
}

/// A state root (`AA_VIRT_ROOT`) for this test process, so that locks and
/// profiles never land in the host's `/run/aa-virt` or `/var/lib/aa-virt`.
pub(crate) fn state_root() -> &'static Path {
    static ROOT: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

pub(crate) fn aa(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut c = common::aa_virt();
    c.args(args)
        .env("AA_VIRT_ROOT", state_root())
        .env_remove("AA_VIRT_SYSROOT")
        .env_remove("AA_VIRT_ALLOW_UNCONFINED");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn enable_is_exact_idempotent_and_disable_restores_bytes() {
    let (_d, lp) = busybox("c1");
    let cfg = lp.join("c1/config");
    let orig = std::fs::read(&cfg).unwrap();
    let lps = lp.to_str().unwrap();
    let enable = || {
        aa(
            &[
                "lxc",
                "enable",
                "-P",
                lps,
                "c1",
                "--snippet",
                "/usr/share/aa-virt/lxc-hooks/aa-virt.conf",
            ],
            &[],
        )
    };
    let o = enable();
    assert!(o.status.success(), "{}", text(&o));
    let once = std::fs::read_to_string(&cfg).unwrap();
    let names = lxc::Names::derive("c1", &lp);
    let label = names.label(ContainerMode::Stacked);
    // The busybox template's own `generated` label is commented out, our
    // block is appended, nothing else changes.
    let expected = String::from_utf8(orig.clone())
        .unwrap()
        .replace("\nlxc.apparmor.profile = generated\n", "\n#aa-virt-off# lxc.apparmor.profile = generated\n")
        + &format!(
            "{}\nlxc.include = /usr/share/aa-virt/lxc-hooks/aa-virt.conf\nlxc.apparmor.profile = {label}\n{}\n",
            lxc::config::BEGIN,
            lxc::config::END
        );
    assert_eq!(once, expected);
    let o = enable();
    assert!(text(&o).contains("already enabled"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        once,
        "enable twice = same file"
    );
    let o = aa(&["lxc", "disable", "-P", lps, "c1"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(&cfg).unwrap(),
        orig,
        "disable restores the original byte for byte"
    );
}

#[test]
fn enable_refuses_another_label_and_bad_input() {
    let (_d, lp) = busybox("c2");
    let cfg = lp.join("c2/config");
    let lps = lp.to_str().unwrap();
    let mine = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("= generated", "= my-profile");
    std::fs::write(&cfg, &mine).unwrap();
    let o = aa(&["lxc", "enable", "-P", lps, "c2"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("container c2") && t.contains("my-profile") && t.contains("--force"),
        "{t}"
    );
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        mine,
        "refusal leaves the config alone"
    );
    // A raw rule that does not compile is refused before the config changes.
    let raw = lp.join("raw");
    std::fs::write(&raw, "this is not a rule\n").unwrap();
    let o = aa(
        &[
            "lxc",
            "enable",
            "-P",
            lps,
            "c2",
            "--force",
            "--raw",
            raw.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("apparmor_parser"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), mine);
    // Unknown container, missing lxcpath.
    let o = aa(&["lxc", "enable", "-P", lps, "nope"], &[]);
    assert!(
        text(&o).contains("container nope: no config"),
        "{}",
        text(&o)
    );
    let o = aa(&["lxc", "enable", "-P", "/nonexistent-lxcpath", "c2"], &[]);
    assert!(
        text(&o).contains("lxcpath /nonexistent-lxcpath"),
        "{}",
        text(&o)
    );
    // --force with good raw rules and nesting.
    std::fs::write(&raw, "# mine\ndeny /srv/secret/** rw,\n").unwrap();
    let o = aa(
        &[
            "lxc",
            "enable",
            "-P",
            lps,
            "c2",
            "--force",
            "--nesting",
            "--raw",
            raw.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let now = std::fs::read_to_string(&cfg).unwrap();
    assert!(now.contains("#aa-virt-off# lxc.apparmor.profile = my-profile\n"));
    assert!(now.contains("\nlxc.apparmor.raw = deny /srv/secret/** rw,\n"));
    let o = aa(&["lxc", "disable", "-P", lps, "c2"], &[]);
    assert!(o.status.success());
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), mine);
}

#[test]
fn every_profile_variant_compiles() {
    let (_d, lp) = busybox("c3");
    let cfg = lp.join("c3/config");
    let base = std::fs::read_to_string(&cfg).unwrap();
    let share = lp.join("share dir");
    std::fs::create_dir(&share).unwrap();
    let templates = Templates::load(None).unwrap();
    let parser = Parser::new();
    let probes = lxc::probe_options(&parser);
    let mut n = 0;
    for nesting in ["0", "1"] {
        for idmap in [false, true] {
            let mut t = base.replace(
                "lxc.apparmor.allow_nesting = 1",
                &format!("lxc.apparmor.allow_nesting = {nesting}"),
            );
            if idmap {
                t.push_str("lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n");
            }
            t.push_str(&format!(
                "lxc.mount.entry = {} srv none rw,bind,create=dir 0 0\n",
                share.display().to_string().replace(' ', "\\040")
            ));
            t.push_str("lxc.apparmor.raw = deny /srv/secret/** rw,\n");
            std::fs::write(&cfg, &t).unwrap();
            let ct = Container::open("c3", &lp).unwrap();
            for mode in [ContainerMode::Stacked, ContainerMode::Plain] {
                let r = profile::render(&ct, mode, &templates, probes).unwrap();
                r.check("c3", &parser)
                    .unwrap_or_else(|e| panic!("nesting={nesting} idmap={idmap} {mode:?}: {e}"));
                assert_eq!(
                    r.text.contains("change_profile -> \":"),
                    mode == ContainerMode::Stacked
                );
                assert_eq!(r.text.contains("\n  mount,\n"), nesting == "1");
                let policy = abi::choose(ProfileKind::LxcContainer, probes.host);
                assert_eq!(r.text.contains("userns,"), policy.userns);
                let abi_line = format!("\nabi <abi/{}>,\n", policy.abi.version());
                assert!(r.text.contains(&abi_line), "{abi_line}");
                assert!(r.text.contains("deny /srv/secret/** rw,"));
                assert!(r.text.contains(r#""/share dir/**" rwlk,"#.replace("/share", &format!("{}/share", lp.display())).as_str()), "{}", r.text);
                n += 1;
            }
        }
    }
    assert_eq!(n, 8);
    // A writable bind of a restricted host place fails the render, naming it.
    std::fs::write(
        &cfg,
        format!("{base}lxc.mount.entry = /etc etc none rw,bind 0 0\n"),
    )
    .unwrap();
    let ct = Container::open("c3", &lp).unwrap();
    let e = profile::render(&ct, ContainerMode::Stacked, &templates, probes)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c3") && e.contains("/etc") && e.contains("lxc.mount.entry"),
        "{e}"
    );
}

/// [`busybox`], enabled with inline hooks.
pub(crate) fn enabled_busybox(name: &str) -> (tempfile::TempDir, PathBuf) {
    let (d, lp) = busybox(name);
    let o = aa(
        &[
            "lxc",
            "enable",
            "-P",
            lp.to_str().unwrap(),
            name,
            "--inline",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    (d, lp)
}

/// A fake AppArmor kernel with stacking, and aa-virt's files in a temp root.
fn fake_host() -> (tempfile::TempDir, Settings) {
    let d = tempfile::tempdir().unwrap();
    let sys = d.path().join("sys-root");
    FakeTree::new(&sys).unwrap();
    write_fake_features(&sys, "1.2").unwrap();
    let s = Settings {
        root: Root::new(&sys),
        layout: Layout::under(&d.path().join("files")),
        parser: Parser::new(),
        allow_unconfined: false,
        allow_incomplete: false,
        settle: Duration::from_millis(0),
        euid: 0,
        userns_policy: aa_virt::config::UsernsPolicySwitch::Close,
    };
    (d, s)
}

fn hook_env(t: &str, name: &str, lp: &Path, pid: Option<u32>) -> HookEnv {
    HookEnv {
        hook_type: t.into(),
        name: name.into(),
        config: lp.join(name).join("config"),
        pid,
    }
}

#[test]
fn pre_start_fails_closed_and_leaves_nothing_behind() {
    let (_d, lp) = enabled_busybox("c4");
    let (_h, s) = fake_host();
    let names = lxc::Names::derive("c4", &lp);
    let templates = Templates::load(None).unwrap();
    // The fake kernel has stacking, so pre-start gets as far as the real
    // parser's load, which fails on this kernel (no AppArmor to load into).
    let e = hook::run(&hook_env("pre-start", "c4", &lp, None), &s, &templates).unwrap_err();
    assert!(matches!(e, LxcError::Parser { .. }), "{e}");
    assert!(e.to_string().contains("container c4"), "{e}");
    assert!(
        !s.root.namespace_exists(&names.namespace),
        "namespace made by the failed run is removed"
    );
    assert!(
        !s.layout.profile_path(&names).exists(),
        "profile file made by the failed run is removed"
    );
    // A namespace that existed before the run is left alone.
    s.root.create_namespace(&names.namespace).unwrap();
    hook::run(&hook_env("pre-start", "c4", &lp, None), &s, &templates).unwrap_err();
    assert!(s.root.namespace_exists(&names.namespace));
    s.root.remove_namespace(&names.namespace).unwrap();

    // The userns-policy switch is closed before the namespace is made: one
    // that cannot be read or set fails the start closed, with no namespace.
    let knob = userns_policy::path(&s.root);
    std::fs::create_dir_all(&knob).unwrap();
    let e = hook::run(&hook_env("pre-start", "c4", &lp, None), &s, &templates).unwrap_err();
    assert!(matches!(e, LxcError::Kernel { .. }), "{e}");
    assert!(
        e.to_string().contains("container c4") && e.to_string().contains(userns_policy::SYSCTL),
        "{e}"
    );
    assert!(!s.root.namespace_exists(&names.namespace));
    // The kernel's default (1) is closed before the load (which then fails
    // here, as above).
    std::fs::remove_dir(&knob).unwrap();
    std::fs::write(&knob, "1\n").unwrap();
    let e = hook::run(&hook_env("pre-start", "c4", &lp, None), &s, &templates).unwrap_err();
    assert!(matches!(e, LxcError::Parser { .. }), "{e}");
    assert_eq!(std::fs::read_to_string(&knob).unwrap(), "0\n");
    // `lxc_userns_policy = "keep"` leaves the switch as it is and goes on
    // to the load.
    std::fs::write(&knob, "1\n").unwrap();
    let keep = Settings {
        userns_policy: aa_virt::config::UsernsPolicySwitch::Keep,
        ..s
    };
    let e = hook::run(&hook_env("pre-start", "c4", &lp, None), &keep, &templates).unwrap_err();
    assert!(matches!(e, LxcError::Parser { .. }), "{e}");
    assert_eq!(std::fs::read_to_string(&knob).unwrap(), "1\n");
}

#[test]
fn start_host_checks_inits_label() {
    let (_d, lp) = enabled_busybox("c5");
    let (_h, s) = fake_host();
    let mut t = FakeTree::new(s.root.path()).unwrap();
    let names = lxc::Names::derive("c5", &lp);
    let templates = Templates::load(None).unwrap();
    let good = format!(
        "{}//&:{}:unconfined (enforce)",
        names.profile, names.namespace
    );
    let good2 = format!(
        "{}//&:{}://unconfined (enforce)",
        names.profile, names.namespace
    );
    t.process(100, &good).unwrap().process(101, &good2).unwrap();
    t.process(102, "lxc-container-default-cgns (enforce)")
        .unwrap();
    t.process(
        103,
        &format!(
            "{}//&:{}:unconfined (complain)",
            names.profile, names.namespace
        ),
    )
    .unwrap();
    t.process(104, "unconfined").unwrap();
    for pid in [100, 101] {
        let out = hook::run(
            &hook_env("start-host", "c5", &lp, Some(pid)),
            &s,
            &templates,
        )
        .unwrap();
        assert_eq!(out, Outcome::Verified(good.clone()));
    }
    for pid in [102, 103, 104] {
        let e = hook::run(
            &hook_env("start-host", "c5", &lp, Some(pid)),
            &s,
            &templates,
        )
        .unwrap_err();
        assert!(matches!(e, LxcError::LabelMismatch { .. }), "{pid}: {e}");
        assert!(e.to_string().contains(&names.profile), "{e}");
    }
    let e = hook::run(
        &hook_env("start-host", "c5", &lp, Some(999_999)),
        &s,
        &templates,
    )
    .unwrap_err();
    assert!(e.to_string().contains("999999"), "{e}");
}

#[test]
fn post_stop_waits_for_tasks_then_cleans_idempotently() {
    let (_d, lp) = enabled_busybox("c6");
    let (_h, s) = fake_host();
    let names = lxc::Names::derive("c6", &lp);
    let templates = Templates::load(None).unwrap();
    let mut t = FakeTree::new(s.root.path()).unwrap();
    t.load(&names.profile, "enforce").unwrap();
    s.root.create_namespace(&names.namespace).unwrap();
    let remove = s.root.apparmor_dir().join(".remove");
    std::fs::write(&remove, "").unwrap();
    // A task still inside the container's namespace: nothing is unloaded.
    t.process(
        200,
        &format!("{}//&:{}:snap.x (enforce)", names.profile, names.namespace),
    )
    .unwrap();
    let e = hook::run(&hook_env("post-stop", "c6", &lp, None), &s, &templates).unwrap_err();
    assert!(
        matches!(&e, LxcError::StillRunning { pids, .. } if pids == &vec![200]),
        "{e}"
    );
    assert!(s.root.namespace_exists(&names.namespace));
    assert_eq!(std::fs::read_to_string(&remove).unwrap(), "");
    // Once it is gone: namespace removed, profile name written to .remove.
    std::fs::remove_dir_all(s.root.path().join("proc/200")).unwrap();
    let out = hook::run(&hook_env("post-stop", "c6", &lp, None), &s, &templates).unwrap();
    assert_eq!(
        out,
        Outcome::Cleaned {
            namespace_removed: true,
            unloaded: true
        }
    );
    assert!(!s.root.namespace_exists(&names.namespace));
    assert_eq!(std::fs::read_to_string(&remove).unwrap(), names.profile);
    // Idempotent: a second run has nothing to do (the fake kernel keeps the
    // profile listed, so simulate the unload).
    std::fs::write(s.root.apparmor_dir().join("profiles"), "").unwrap();
    let out = hook::run(&hook_env("post-stop", "c6", &lp, None), &s, &templates).unwrap();
    assert_eq!(
        out,
        Outcome::Cleaned {
            namespace_removed: false,
            unloaded: false
        }
    );
}

#[test]
fn hooks_refuse_configs_that_are_not_ours() {
    let (_d, lp) = busybox("c7");
    let (_h, s) = fake_host();
    let templates = Templates::load(None).unwrap();
    let e = hook::run(&hook_env("pre-start", "c7", &lp, None), &s, &templates).unwrap_err();
    let t = e.to_string();
    assert!(
        t.contains("lxc.apparmor.profile is generated") && t.contains("aa-virt lxc enable c7"),
        "{t}"
    );
    // A kernel that cannot stack.
    let o = aa(
        &[
            "lxc",
            "enable",
            "-P",
            lp.to_str().unwrap(),
            "c7",
            "--inline",
        ],
        &[],
    );
    assert!(o.status.success());
    std::fs::write(
        s.root.apparmor_dir().join("features/domain/version"),
        "1.1\n",
    )
    .unwrap();
    let e = hook::run(&hook_env("pre-start", "c7", &lp, None), &s, &templates).unwrap_err();
    assert!(e.to_string().contains("cannot stack"), "{e}");
    // Other hook types are ignored.
    let out = hook::run(&hook_env("mount", "c7", &lp, None), &s, &templates).unwrap();
    assert_eq!(out, Outcome::Ignored);
}

/// `aa-virt hook lxc` as LXC runs it, version 0 (arguments) and 1 (env).
#[test]
fn hook_command_line_forms() {
    let (_d, lp) = busybox("c8");
    let cfg = lp.join("c8/config");
    let o = aa(
        &[
            "lxc",
            "enable",
            "-P",
            lp.to_str().unwrap(),
            "c8",
            "--inline",
        ],
        &[],
    );
    assert!(o.status.success());
    let run = |args: &[&str], hook_type: Option<&str>| {
        let mut c = common::aa_virt();
        c.args(["hook", "lxc"]).args(args);
        c.env_remove("AA_VIRT_SYSROOT")
            .env_remove("AA_VIRT_ALLOW_UNCONFINED")
            .env_remove("LXC_HOOK_TYPE");
        c.env("LXC_NAME", "c8").env("LXC_CONFIG_FILE", &cfg);
        if let Some(t) = hook_type {
            c.env("LXC_HOOK_TYPE", t);
        }
        c.output().unwrap()
    };
    let o = run(&["c8", "lxc", "autodev"], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&[], Some("stop"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&[], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("LXC_HOOK_TYPE"), "{}", text(&o));
}

#[test]
fn lxc_start_fails_closed_without_apparmor_or_runs_allowed_unconfined() {
    need("lxc-start");
    if Root::system().kernel_status().is_available() {
        panic!("this test expects a kernel without AppArmor (the integration VM covers AppArmor kernels)");
    }
    let (d, lp) = busybox("c9");
    let lps = lp.to_str().unwrap();
    let o = aa(&["lxc", "enable", "-P", lps, "c9", "--inline"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let log = d.path().join("hooks.log");
    let lxclog = d.path().join("lxc.log");
    /// How the test lets the container start unconfined, if at all.
    #[derive(Clone, Copy, PartialEq)]
    enum Allow {
        No,
        Env,
        Config,
    }
    let open_cfg = d.path().join("open.toml");
    std::fs::write(&open_cfg, "fail = \"open\"\n").unwrap();
    let start = |allow: Allow| {
        let mut c = Command::new("timeout");
        c.args([
            "60",
            "lxc-start",
            "-P",
            lps,
            "-n",
            "c9",
            "-d",
            "-l",
            "DEBUG",
            "-o",
        ])
        .arg(&lxclog);
        c.env("AA_VIRT_HOOK_LOG", &log)
            .env("AA_VIRT_ROOT", state_root())
            .env_remove("AA_VIRT_SYSROOT");
        c.env_remove("AA_VIRT_ALLOW_UNCONFINED")
            .env("AA_VIRT_CONFIG", d.path().join("absent.toml"));
        match allow {
            Allow::No => {}
            Allow::Env => {
                c.env("AA_VIRT_ALLOW_UNCONFINED", "1");
            }
            Allow::Config => {
                c.env("AA_VIRT_CONFIG", &open_cfg);
            }
        }
        c.output().unwrap()
    };
    // 1. Fail closed: the start fails, our message is in LXC's log.
    let o = start(Allow::No);
    assert!(
        !o.status.success(),
        "the container must not start unconfined"
    );
    let l = std::fs::read_to_string(&lxclog).unwrap();
    assert!(
        l.contains("AppArmor not available") && l.contains("container would run unconfined"),
        "LXC log lacks our message:\n{l}"
    );
    let hooks = std::fs::read_to_string(&log).unwrap();
    let kinds: Vec<&str> = hooks
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(kinds, ["pre-start", "post-stop"], "{hooks}");
    assert!(hooks.starts_with("pre-start c9 error: "), "{hooks}");
    // 2. Allowed unconfined, by lxc-start's environment or by
    // `fail = "open"` in aa-virt.toml: start, stop, hooks in order.
    for allow in [Allow::Env, Allow::Config] {
        std::fs::remove_file(&log).unwrap();
        let o = start(allow);
        assert!(o.status.success(), "{}", text(&o));
        let hooks = common::lxc_stop_waiting_for_post_stop(lps, "c9", &log);
        assert_eq!(
            common::hook_kinds(&hooks),
            ["pre-start", "start-host", "post-stop"],
            "{hooks}"
        );
        assert!(hooks.lines().all(|l| l.contains(" ok: ")), "{hooks}");
        let info = Command::new("lxc-info")
            .args(["-P", lps, "-n", "c9", "-s", "-H"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&info.stdout).trim(), "STOPPED");
    }
}
