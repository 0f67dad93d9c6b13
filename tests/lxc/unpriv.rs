//! Unprivileged LXC containers (issue 17): root-started id-mapped
//! containers with the real `lxc-create`/`lxc-start` on this kernel, and
//! user containers (`aa-virt lxc enable --user`) with their hooks run as
//! the user against a fake AppArmor kernel.
//!
//! Kernel-side behaviour (labels, namespaces, denials, a real user's
//! `lxc-start`) is proven in `integration-vms/suite/cases/46-lxc-unpriv.sh`.

use crate::common;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aa_virt::apparmor::fake::FakeTree;
use aa_virt::apparmor::features::write_fake_features;
use aa_virt::apparmor::userns_policy;
use aa_virt::apparmor::{ContainerMode, Parser, Root};
use aa_virt::lxc::{self as lxc, profile, user, Container};
use aa_virt::policy::Templates;

/// The ordinary user the user-container tests act as (present on every
/// Debian system; its home does not exist, so -P is always given).
const USER: &str = "nobody";
const IDMAP: &str = "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n";

fn out_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An id-mapped busybox container `name` created by root's `lxc-create -f`
/// (the template writes the rootfs owned by the mapped root), no network,
/// in a world-traversable lxcpath under `dir`.
fn idmapped_busybox(dir: &Path, name: &str) -> PathBuf {
    let lp = dir.join("lxc");
    std::fs::create_dir_all(&lp).unwrap();
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(&conf, format!("{IDMAP}lxc.net.0.type = empty\n")).unwrap();
    let o = Command::new("lxc-create")
        .arg("-P")
        .arg(&lp)
        .arg("-f")
        .arg(&conf)
        .args(["-t", "busybox", "-n", name])
        .output()
        .expect("lxc-create (Debian packages lxc and busybox-static)");
    assert!(o.status.success(), "lxc-create: {}", out_text(&o));
    lp.canonicalize().unwrap()
}

/// A tempdir others can traverse (the user's hooks read below it).
fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

#[test]
fn root_started_idmapped_container_runs_with_every_hook() {
    let d = open_tempdir();
    let lp = idmapped_busybox(d.path(), "u1");
    let lps = lp.to_str().unwrap();
    let state = d.path().join("state");
    let cfg = lp.join("u1/config");
    // LXC leaves the config of a root-created id-mapped container with
    // whatever owner it had; make it the mapped root's, as a user's
    // lxc-create would, so that enable must keep it.
    std::os::unix::fs::chown(&cfg, Some(100000), Some(100000)).unwrap();
    let aa = |args: &[&str]| {
        common::aa_virt()
            .args(args)
            .env("AA_VIRT_ROOT", &state)
            .env_remove("AA_VIRT_SYSROOT")
            .output()
            .unwrap()
    };
    let o = aa(&["lxc", "enable", "-P", lps, "u1", "--inline"]);
    assert!(o.status.success(), "{}", out_text(&o));
    let md = std::fs::metadata(&cfg).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (100000, 100000),
        "enable keeps the config's owner"
    );
    // The rootfs stays the mapped root's: aa-virt writes nothing into it.
    let root_md = std::fs::metadata(lp.join("u1/rootfs/bin")).unwrap();
    assert_eq!(root_md.uid(), 100000);

    let log = d.path().join("hooks.log");
    let start = |allow: bool| {
        let mut c = Command::new("timeout");
        c.args(["60", "lxc-start", "-P", lps, "-n", "u1", "-d"])
            .env("AA_VIRT_HOOK_LOG", &log)
            .env("AA_VIRT_ROOT", &state)
            .env("AA_VIRT_CONFIG", d.path().join("absent.toml"))
            .env_remove("AA_VIRT_SYSROOT");
        if allow {
            c.env("AA_VIRT_ALLOW_UNCONFINED", "1");
        } else {
            c.env_remove("AA_VIRT_ALLOW_UNCONFINED");
        }
        c.output().unwrap()
    };
    // No AppArmor on this kernel: the id-mapped container fails closed too.
    let o = start(false);
    assert!(!o.status.success(), "must not start unconfined");
    let hooks = std::fs::read_to_string(&log).unwrap();
    assert!(hooks.starts_with("pre-start u1 error: "), "{hooks}");
    std::fs::remove_file(&log).unwrap();

    // Allowed unconfined: every hook runs (as host root, in the host's
    // namespaces: LXC runs them before and outside the container's user
    // namespace), init is uid 0 inside and 100000 on the host.
    let o = start(true);
    assert!(o.status.success(), "{}", out_text(&o));
    let info = Command::new("lxc-info")
        .args(["-P", lps, "-n", "u1", "-p", "-H"])
        .output()
        .unwrap();
    let pid: u32 = String::from_utf8_lossy(&info.stdout)
        .trim()
        .parse()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("100000"),
        "{uid_line}"
    );
    let inside = Command::new("lxc-attach")
        .args(["-P", lps, "-n", "u1", "--", "id", "-u"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&inside.stdout).trim(), "0");
    let hooks = common::lxc_stop_waiting_for_post_stop(lps, "u1", &log);
    assert_eq!(
        common::hook_kinds(&hooks),
        ["pre-start", "start-host", "post-stop"],
        "{hooks}"
    );
    assert!(hooks.lines().all(|l| l.contains(" ok: ")), "{hooks}");
    let _ = Command::new("lxc-destroy")
        .args(["-P", lps, "-n", "u1", "-f"])
        .output();
}

/// The profile's rules without comments and blank lines.
fn rules(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(" #").next().unwrap().trim_end())
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_unprivileged_profile_is_the_privileged_one() {
    let d = open_tempdir();
    let lp = idmapped_busybox(d.path(), "u2");
    let cfg = lp.join("u2/config");
    let idmapped = std::fs::read_to_string(&cfg).unwrap();
    let templates = Templates::load(None).unwrap();
    let parser = Parser::new();
    let probes = lxc::probe_options(&parser);
    for nesting in [false, true] {
        let extra = if nesting {
            "lxc.apparmor.allow_nesting = 1\n"
        } else {
            ""
        };
        std::fs::write(&cfg, format!("{idmapped}{extra}")).unwrap();
        let un = Container::open("u2", &lp).unwrap();
        assert!(!un.privileged());
        std::fs::write(&cfg, format!("{}{extra}", idmapped.replace(IDMAP, ""))).unwrap();
        let pr = Container::open("u2", &lp).unwrap();
        assert!(pr.privileged());
        for mode in [ContainerMode::Stacked, ContainerMode::Plain] {
            let a = profile::render(&un, mode, &templates, probes).unwrap();
            let b = profile::render(&pr, mode, &templates, probes).unwrap();
            a.check("u2", &parser).unwrap();
            assert_eq!(rules(&a.text), rules(&b.text), "nesting={nesting} {mode:?}");
            assert!(a.text.contains("user namespace"), "the template says why");
            assert_eq!(
                a.text.contains("\n  pivot_root,\n"),
                nesting,
                "pivot_root only with nesting"
            );
            assert!(a
                .text
                .contains("deny @{PROC}/sys/fs/binfmt_misc/{,**} wklx,"));
        }
    }
}

/// A fake AppArmor kernel with stacking for the binary: (kernel, sysroot).
fn fake_kernel() -> (common::FakeKernel, PathBuf) {
    let k = common::FakeKernel::new();
    let sys = k.sysroot();
    FakeTree::new(&sys).unwrap();
    write_fake_features(&sys, "1.2").unwrap();
    (k, sys)
}

struct UserEnv {
    _d: tempfile::TempDir,
    k: common::FakeKernel,
    sys: PathBuf,
    state: PathBuf,
    lp: PathBuf,
    account: user::Account,
}

impl UserEnv {
    /// Containers `names`, owned by [`USER`], in one lxcpath.
    fn new(names: &[&str]) -> UserEnv {
        let d = open_tempdir();
        let mut lp = PathBuf::new();
        let account = user::account(USER).unwrap();
        for n in names {
            lp = idmapped_busybox(d.path(), n);
            // As the user's own lxc-create leaves them: the container's
            // directory and config are the user's.
            for p in [lp.join(n), lp.join(n).join("config")] {
                std::os::unix::fs::chown(p, Some(account.uid), Some(account.gid)).unwrap();
            }
        }
        let (k, sys) = fake_kernel();
        let state = d.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        UserEnv {
            _d: d,
            k,
            sys,
            state,
            lp,
            account,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = common::aa_virt();
        c.args(args)
            .env("AA_VIRT_ROOT", &self.state)
            .env("AA_VIRT_SYSROOT", &self.sys)
            .env("AA_VIRT_PARSER", &self.k.parser)
            .env("AA_VIRT_CONFIG", self.state.join("absent.toml"))
            .env_remove("AA_VIRT_ALLOW_UNCONFINED");
        c
    }

    fn root(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn enable(&self, name: &str) -> Output {
        let lp = self.lp.to_str().unwrap().to_string();
        self.root(&["lxc", "enable", "--user", USER, "-P", &lp, name, "--inline"])
    }

    /// `aa-virt hook lxc` as LXC runs it for the user's `lxc-start`: as
    /// the user.
    fn hook(&self, name: &str, hook_type: &str) -> Output {
        self.cmd(&["hook", "lxc"])
            .env("LXC_HOOK_TYPE", hook_type)
            .env("LXC_NAME", name)
            .env("LXC_CONFIG_FILE", self.lp.join(name).join("config"))
            .uid(self.account.uid)
            .gid(self.account.gid)
            .output()
            .unwrap()
    }

    fn loaded(&self) -> String {
        std::fs::read_to_string(self.k.fs.join("profiles")).unwrap()
    }
}

#[test]
fn a_user_container_is_registered_loaded_and_only_checked_by_its_hooks() {
    let e = UserEnv::new(&["c1", "c2"]);
    let names = lxc::Names::derive("c1", &e.lp);
    let layout = lxc::Layout::under(&e.state);
    // Before root's step, the user's start fails closed, saying what to do.
    let o = e.enable("c2");
    assert!(o.status.success(), "{}", out_text(&o));
    let c2_label = names_label(&e.lp, "c2");
    let o = e.hook("c1", "pre-start");
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(
        out_text(&o).contains("lxc.apparmor.profile"),
        "{}",
        out_text(&o)
    );

    // The kernel's default: root of a user namespace may manage policy.
    let knob = userns_policy::path(&Root::new(&e.sys));
    std::fs::create_dir_all(knob.parent().unwrap()).unwrap();
    std::fs::write(&knob, "1\n").unwrap();
    // A host that keeps the switch open (another manager's containers load
    // policy from user namespaces) gets no user containers: they depend on it.
    let keep = e.state.join("absent.toml");
    std::fs::write(&keep, "lxc_userns_policy = \"keep\"\n").unwrap();
    let o = e.enable("c1");
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(
        out_text(&o).contains("container c1")
            && out_text(&o).contains("lxc_userns_policy = \"keep\""),
        "{}",
        out_text(&o)
    );
    assert_eq!(std::fs::read_to_string(&knob).unwrap(), "1\n");
    assert!(user::registration(&layout, &names).unwrap().is_none());
    std::fs::remove_file(&keep).unwrap();
    let o = e.enable("c1");
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(
        out_text(&o).contains(&format!("registered to user {USER} and loaded")),
        "{}",
        out_text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&knob).unwrap(),
        "0\n",
        "enable --user closes {}",
        userns_policy::SYSCTL
    );
    let cfg = e.lp.join("c1/config");
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().uid(),
        e.account.uid,
        "the config stays the user's"
    );
    assert!(e.loaded().contains(&format!("{} (enforce)", names.profile)));
    assert!(Root::new(&e.sys).namespace_exists(&names.namespace));
    let reg = user::registration(&layout, &names).unwrap().unwrap();
    assert_eq!((reg.user.as_str(), reg.uid), (USER, e.account.uid));

    // `aa-virt list` finds the user's lxcpath from the registrations and
    // says whose containers they are.
    let o = e.root(&[
        "list",
        "--connect",
        "test:///default",
        "--no-denials",
        "--json",
    ]);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", out_text(&o)));
    for n in ["c1", "c2"] {
        let g = v["guests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == n)
            .unwrap_or_else(|| panic!("{n} not listed: {v}"));
        assert_eq!(
            (g["privilege"].as_str(), g["owner"].as_str()),
            (Some("user"), Some(USER)),
            "{g}"
        );
    }
    let o = e.root(&["list", "--connect", "test:///default", "--no-denials"]);
    let t = out_text(&o);
    let row = t.lines().find(|l| l.starts_with("c1 ")).expect(&t);
    assert!(row.contains(&format!(" user:{USER} ")), "{t}");

    // The user's hooks: pre-start checks, start-host has nothing to verify
    // without init here, post-stop keeps the policy (it is root's).
    let o = e.hook("c1", "pre-start");
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(
        out_text(&o).contains(&format!("registered to user {USER}")),
        "{}",
        out_text(&o)
    );
    let o = e.hook("c1", "post-stop");
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(out_text(&o).contains("stays loaded"), "{}", out_text(&o));
    assert!(e.loaded().contains(&names.profile));

    // The same user cannot start c1 under c2's registered profile.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mine = names_label(&e.lp, "c1");
    std::fs::write(&cfg, text.replace(&mine, &c2_label)).unwrap();
    let o = e.hook("c1", "pre-start");
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(
        out_text(&o).contains(&c2_label) && out_text(&o).contains("not aa-virt's label"),
        "{}",
        out_text(&o)
    );
    std::fs::write(&cfg, &text).unwrap();

    // Another uid running c1's hooks (on a config it can read) is refused.
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(e.lp.join("c1"), open.clone()).unwrap();
        std::fs::set_permissions(&cfg, open).unwrap();
    }
    let o = e
        .cmd(&["hook", "lxc"])
        .env("LXC_HOOK_TYPE", "pre-start")
        .env("LXC_NAME", "c1")
        .env("LXC_CONFIG_FILE", &cfg)
        .uid(e.account.uid - 1)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(
        out_text(&o).contains(&format!("user {USER}")),
        "{}",
        out_text(&o)
    );

    // A reboot opens the switch again (and unloads the profile, below);
    // load-users closes it before it loads anything.
    std::fs::write(&knob, "1\n").unwrap();
    let o = e.root(&["lxc", "load-users"]);
    assert!(o.status.success(), "{}", out_text(&o));
    assert_eq!(std::fs::read_to_string(&knob).unwrap(), "0\n");

    // A profile that is no longer loaded (a reboot) fails the user's start;
    // root's load-users loads the stored one again.
    std::fs::write(e.k.fs.join("profiles"), "").unwrap();
    let o = e.hook("c1", "pre-start");
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(out_text(&o).contains("load-users"), "{}", out_text(&o));
    let o = e.root(&["lxc", "load-users"]);
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(e.loaded().contains(&names.profile), "{}", out_text(&o));
    assert!(e.hook("c1", "pre-start").status.success());

    // Disable unloads and unregisters; the user's start then fails closed.
    std::fs::write(e.k.fs.join(".remove"), "").unwrap();
    let o = e.root(&["lxc", "disable", "-P", e.lp.to_str().unwrap(), "c1"]);
    assert!(o.status.success(), "{}", out_text(&o));
    assert_eq!(
        std::fs::read_to_string(e.k.fs.join(".remove")).unwrap(),
        names.profile
    );
    assert!(user::registration(&layout, &names).unwrap().is_none());
}

fn names_label(lp: &Path, name: &str) -> String {
    lxc::Names::derive(name, lp).label(ContainerMode::Stacked)
}

#[test]
fn root_refuses_what_a_user_container_must_not_get() {
    let e = UserEnv::new(&["c3"]);
    let cfg = e.lp.join("c3/config");
    let lps = e.lp.to_str().unwrap().to_string();
    // Someone else's container.
    std::os::unix::fs::chown(&cfg, Some(0), Some(0)).unwrap();
    let o = e.enable("c3");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out_text(&o).contains("belongs to uid 0, not to user nobody"),
        "{}",
        out_text(&o)
    );
    std::os::unix::fs::chown(&cfg, Some(e.account.uid), Some(e.account.gid)).unwrap();
    // Raw rules of the user's own; a read-only bind of the host's /etc.
    let text = std::fs::read_to_string(&cfg).unwrap();
    for (line, want) in [
        (
            "lxc.apparmor.raw = change_profile -> unconfined,",
            &["raw rules come only from root"][..],
        ),
        (
            "lxc.mount.entry = /etc etc none ro,bind 0 0",
            &["lxc.mount.entry at", "/etc"][..],
        ),
    ] {
        std::fs::write(&cfg, format!("{text}{line}\n")).unwrap();
        let o = e.enable("c3");
        assert_eq!(o.status.code(), Some(1));
        let t = out_text(&o);
        assert!(
            t.contains("c3") && want.iter().all(|w| t.contains(w)),
            "{line}: {t}"
        );
    }
    // Nothing was registered or loaded by the refusals.
    assert!(user::registrations(&lxc::Layout::under(&e.state)).is_empty());
    assert!(!e.loaded().contains("lxc-"), "{}", e.loaded());
    std::fs::write(&cfg, &text).unwrap();
    let o = e.root(&[
        "lxc",
        "enable",
        "--user",
        "no-such-user-aa-virt",
        "-P",
        &lps,
        "c3",
    ]);
    assert!(out_text(&o).contains("no such user"), "{}", out_text(&o));
}

#[test]
fn list_says_privileged_or_unprivileged() {
    let d = open_tempdir();
    let lp = idmapped_busybox(d.path(), "u3");
    let o = Command::new("lxc-create")
        .arg("-P")
        .arg(&lp)
        .args(["-t", "busybox", "-n", "p3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out_text(&o));
    let o = common::aa_virt()
        .args(["list", "--no-denials", "--json", "-P", lp.to_str().unwrap()])
        .env("AA_VIRT_ROOT", d.path())
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", out_text(&o)));
    let kind = |n: &str| {
        v["guests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == n)
            .map(|g| (g["privilege"].clone(), g["owner"].clone()))
    };
    assert_eq!(
        kind("u3"),
        Some(("unprivileged".into(), serde_json::Value::Null))
    );
    assert_eq!(
        kind("p3"),
        Some(("privileged".into(), serde_json::Value::Null))
    );
}
