//! `aa-virt list` / `status` with real LXC containers created by the test
//! (`lxc-create -t busybox`, one started), read through liblxc. The kernel
//! side is a fake securityfs/procfs tree (AA_VIRT_SYSROOT) holding the
//! label of the container's REAL init pid, in the kernel's exact format.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::list::*;
use aa_virt::apparmor::fake::FakeTree;
use aa_virt::apparmor::ContainerMode;
use aa_virt::lxc::naming::Names;
use serde_json::Value;

fn lxc(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} is required for this test (apt-get install lxc): {e}",
                args[0]
            )
        })
}

/// Containers in a temporary lxcpath, stopped and destroyed on drop.
struct Lxcpath {
    dir: tempfile::TempDir,
    names: Vec<String>,
}

impl Lxcpath {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn create(&mut self, name: &str, label: Option<&str>) {
        let p = self.path().to_str().unwrap().to_string();
        let o = lxc(&["lxc-create", "-P", &p, "-t", "busybox", "-n", name]);
        assert!(o.status.success(), "lxc-create {name}: {}", err(&o));
        self.names.push(name.into());
        // No bridge on test machines: no network.
        let cfg = self.path().join(name).join("config");
        let mut text: String = std::fs::read_to_string(&cfg)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("lxc.net.0.") && !l.starts_with("lxc.apparmor.profile"))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str("lxc.net.0.type = empty\n");
        if let Some(l) = label {
            text.push_str(&format!("lxc.apparmor.profile = {l}\n"));
        }
        std::fs::write(&cfg, text).unwrap();
    }

    fn start(&self, name: &str) -> u32 {
        let p = self.path().to_str().unwrap();
        let o = lxc(&["lxc-start", "-P", p, "-n", name, "-d"]);
        assert!(o.status.success(), "lxc-start {name}: {}", err(&o));
        let o = lxc(&["lxc-info", "-P", p, "-n", name, "-p", "-H"]);
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("init pid")
    }
}

impl Drop for Lxcpath {
    fn drop(&mut self) {
        let p = self.path().to_str().unwrap().to_string();
        for n in &self.names {
            let _ = lxc(&["lxc-stop", "-P", &p, "-n", n, "-k"]);
            let _ = lxc(&["lxc-destroy", "-P", &p, "-n", n]);
        }
    }
}

#[test]
fn real_containers_stacked_labels_and_check() {
    let mut lp = Lxcpath {
        dir: tempfile::tempdir().unwrap(),
        names: Vec::new(),
    };
    let lxcpath = lp.path().to_str().unwrap().to_string();
    // aa-virt's own naming and label (what `aa-virt lxc enable` writes).
    let names = Names::derive("web", &std::fs::canonicalize(lp.path()).unwrap());
    let (prof, ns) = (names.profile.clone(), names.namespace.clone());
    let label = names.label(ContainerMode::Stacked);
    assert_eq!(label, format!("{prof}//&:{ns}:"));
    lp.create("web", Some(&label));
    lp.create("db", None);
    let pid = lp.start("web");

    let d = tempfile::tempdir().unwrap();
    let sys = d.path().join("sys");
    let mut t = FakeTree::new(&sys).unwrap();
    t.load(&prof, "enforce")
        .unwrap()
        .load_in(&ns, "snap.hello.hello", "enforce")
        .unwrap()
        .process(pid, &format!("{prof}//&:{ns}:unconfined (enforce)"))
        .unwrap();
    // The profile aa-virt wrote for it, under the policy root.
    let pol = d.path().join("pol");
    let pfile: PathBuf = aa_virt::lxc::Layout::under(&pol).profile_path(&names);
    std::fs::create_dir_all(pfile.parent().unwrap()).unwrap();
    std::fs::write(
        &pfile,
        format!("#include <tunables/global>\nprofile \"{prof}\" flags=(attach_disconnected,mediate_deleted) {{\n  file,\n  capability,\n  deny /proc/sysrq-trigger rwklx,\n  change_profile -> \":{ns}:*\",\n}}\n"),
    )
    .unwrap();
    let log = d.path().join("kern.log");
    std::fs::write(
        &log,
        format!("Nov 28 10:00:00 h kernel: [ 1.0] audit: type=1400 audit(1732800000.5:3): apparmor=\"DENIED\" operation=\"open\" namespace=\"root//{ns}\" profile=\"snap.hello.hello\" name=\"/etc/x\" pid={pid} comm=\"sh\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0\n\
                 Nov 28 10:00:01 h kernel: [ 2.0] audit: type=1400 audit(1732800001.5:4): apparmor=\"DENIED\" operation=\"open\" profile=\"{prof}\" name=\"/proc/sysrq-trigger\" pid={pid} comm=\"sh\" requested_mask=\"w\" denied_mask=\"w\" fsuid=0 ouid=0\n"),
    )
    .unwrap();
    let opts = [
        "-P",
        &lxcpath,
        "--root",
        pol.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ];
    let base: Vec<&str> = std::iter::once("list").chain(opts).collect();
    let run = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend(extra);
        aa_virt(&sys, &a)
    };

    let o = run(&["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v = check_schema(&out(&o));
    assert_eq!(
        v["sources"].as_array().unwrap().len(),
        1,
        "only LXC when only --lxcpath"
    );
    let web = guest(&v, "web");
    assert_eq!(web["kind"], "lxc");
    assert_eq!(web["state"], "running");
    assert_eq!(web["pid"], pid);
    assert_eq!(web["profile"], prof.as_str());
    assert_eq!(web["expected_label"], format!("{prof}//&:{ns}:unconfined"));
    assert_eq!(web["label"], format!("{prof}//&:{ns}:unconfined"));
    assert_eq!(web["label_mode"], "enforce");
    assert_eq!(web["label_source"], "procfs");
    assert_eq!(web["label_ok"], true);
    assert_eq!(web["loaded"], true);
    assert_eq!(web["namespace"], ns.as_str());
    assert_eq!(web["namespace_exists"], true);
    assert_eq!(web["namespace_profiles"], 1);
    assert_eq!(web["rules"], 4);
    assert_eq!(web["denials"], 2);
    assert_eq!(web["confined"], true, "{web}");
    let db = guest(&v, "db");
    assert_eq!(db["state"], "stopped");
    assert_eq!(db["active"], false);
    assert_eq!(db["confined"], Value::Null);
    assert!(db["problems"]
        .to_string()
        .contains("not managed by aa-virt"));

    let table = out(&run(&[]));
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [
            "web",
            "lxc",
            "running",
            &prof[..],
            "yes",
            "enforce",
            "yes",
            "yes",
            "(1)",
            "privileged",
            "4",
            "2"
        ]
    );

    // Everything running is confined, but the profile was put in the
    // kernel by hand: aa-virt cannot show it is the policy on disk, so
    // --check says stale (exit 4), and `reload` clears it.
    let o = run(&["--check"]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(
        err(&o).contains("stale policy: web (lxc,") && err(&o).contains("no record"),
        "{}",
        err(&o)
    );
    assert!(out(&run(&[])).contains("note: stale policy"));
    let aa = sys.join("sys/kernel/security/apparmor");
    std::fs::write(aa.join(aa_virt::apparmor::fake::MARKER), "").unwrap();
    let reload = |who: &[&str]| {
        let mut a = vec!["reload", "-P", &lxcpath];
        a.extend(who);
        let o = aa_virt_env(&sys, &a, &[("AA_VIRT_ROOT", pol.to_str().unwrap())]);
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        assert!(err(&o).contains("guest web: reloaded"), "{}", err(&o));
    };
    reload(&["web"]);
    let o = run(&["--check", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(guest(&check_schema(&out(&o)), "web")["policy"], "current");
    // The policy on disk changes (abstractions and local/ edits are
    // covered in apparmor::freshness's tests): stale again.
    let text = std::fs::read_to_string(&pfile).unwrap();
    std::fs::write(
        &pfile,
        text.replace("  capability,\n", "  capability chown,\n"),
    )
    .unwrap();
    let o = run(&["--check", "--json"]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    let v = check_schema(&out(&o));
    assert_eq!(guest(&v, "web")["stale"], true);
    assert!(
        guest(&v, "web")["policy"]
            .as_str()
            .unwrap()
            .contains("changed"),
        "{v}"
    );
    let wide = out(&run(&["--format", "wide"]));
    let row = wide.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(row.contains(" stale "), "POLICY column: {wide}");
    let st = aa_virt(
        &sys,
        &[
            "status",
            "-P",
            &lxcpath,
            "--root",
            pol.to_str().unwrap(),
            "web",
        ],
    );
    assert!(out(&st).contains("policy:    stale:"), "{}", out(&st));
    reload(&[]);
    let o = run(&["--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // reload rendered the container's profile again (the hand-written
    // file is gone), as its next start would.
    let rendered = std::fs::read_to_string(&pfile).unwrap();
    assert!(!rendered.contains("  capability chown,\n"), "{rendered}");
    assert!(
        rendered.contains(&format!("change_profile -> \":{ns}:")),
        "{rendered}"
    );

    // A new container template (here the configuration's `templates`,
    // as an upgraded aa-virt's built-in one would be): the stored file
    // and the kernel agree, yet the profile renders differently now. That
    // is stale, and reload applies the new template without a restart.
    let tpl = d.path().join("templates");
    std::fs::create_dir_all(tpl.join("lxc")).unwrap();
    let builtin =
        std::fs::read_to_string(crate::common::repo().join("templates/lxc/container.hbs")).unwrap();
    std::fs::write(
        tpl.join("lxc/container.hbs"),
        format!("{builtin}# changed by the new template\n"),
    )
    .unwrap();
    let cfg = d.path().join("aa-virt.toml");
    std::fs::write(&cfg, format!("templates = \"{}\"\n", tpl.display())).unwrap();
    let with_cfg = |a: &[&str]| {
        let mut args = base.to_vec();
        args.extend(a);
        aa_virt_env(&sys, &args, &[("AA_VIRT_CONFIG", cfg.to_str().unwrap())])
    };
    let o = with_cfg(&["--check"]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(
        err(&o).contains("stale policy: web (lxc,") && err(&o).contains("renders differently now"),
        "{}",
        err(&o)
    );
    assert_eq!(
        run(&["--check"]).status.code(),
        Some(0),
        "the old template: current"
    );
    let reload_cfg = || {
        aa_virt_env(
            &sys,
            &["reload", "-P", &lxcpath, "web"],
            &[
                ("AA_VIRT_ROOT", pol.to_str().unwrap()),
                ("AA_VIRT_CONFIG", cfg.to_str().unwrap()),
            ],
        )
    };
    let o = reload_cfg();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(std::fs::read_to_string(&pfile)
        .unwrap()
        .ends_with("# changed by the new template\n"));
    let o = with_cfg(&["--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // A template that no longer renders: reload fails naming the
    // container, and the stored file and the kernel keep the previous one.
    std::fs::write(tpl.join("lxc/container.hbs"), "{{#if}}\n").unwrap();
    let before = std::fs::read_to_string(&pfile).unwrap();
    let o = reload_cfg();
    assert_ne!(o.status.code(), Some(0), "{}", err(&o));
    assert!(
        err(&o).contains("container web: not reloaded"),
        "{}",
        err(&o)
    );
    assert_eq!(std::fs::read_to_string(&pfile).unwrap(), before);
    std::fs::remove_file(aa.join(aa_virt::apparmor::fake::MARKER)).unwrap();

    // A stack reported as mixed (the host profile in complain mode).
    t.process(pid, &format!("{prof}//&:{ns}:snap (mixed)"))
        .unwrap();
    let o = run(&["--check", "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let v = check_schema(&out(&o));
    assert_eq!(guest(&v, "web")["label_ok"], false);
    assert_eq!(guest(&v, "web")["label_mode"], "mixed");
    assert!(err(&o).contains("not confined: web (lxc,"), "{}", err(&o));

    // Init escaped to unconfined: flagged, and the namespace gone too.
    t.process(pid, "unconfined").unwrap();
    std::fs::remove_dir_all(
        sys.join("sys/kernel/security/apparmor/policy/namespaces")
            .join(&ns),
    )
    .unwrap();
    let o = run(&["--check"]);
    assert_eq!(o.status.code(), Some(3));
    let e = err(&o);
    assert!(
        e.contains("runs as unconfined") && e.contains("does not exist"),
        "{e}"
    );
    assert!(
        !e.contains("db"),
        "a stopped container is never flagged: {e}"
    );

    // status: the profile's rules and the denial inside the namespace.
    let status: Vec<&str> = ["status", "web"]
        .into_iter()
        .chain(opts)
        .chain(["--json"])
        .collect();
    let o = aa_virt(&sys, &status);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let s: Value = serde_json::from_str(&out(&o)).unwrap();
    // The rules of the profile reload rendered, as `list` counts them.
    let listed = guest(&check_schema(&out(&run(&["--json"]))), "web")["rules"].clone();
    assert_eq!(
        s["rules"].as_array().unwrap().len() as u64,
        listed.as_u64().unwrap()
    );
    assert!(listed.as_u64().unwrap() > 4, "{listed}");
    assert_eq!(s["rules_from"], pfile.display().to_string());
    assert_eq!(s["denials"].as_array().unwrap().len(), 2);
}

#[test]
fn real_containers_without_apparmor() {
    let mut lp = Lxcpath {
        dir: tempfile::tempdir().unwrap(),
        names: Vec::new(),
    };
    lp.create("c1", Some("lxc-c1_<-x>//&:lxc-c1_<-x>:"));
    let empty = tempfile::tempdir().unwrap();
    let p = lp.path().to_str().unwrap().to_string();
    let o = aa_virt(empty.path(), &["list", "-P", &p, "--json", "--no-denials"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v = check_schema(&out(&o));
    assert_eq!(v["apparmor"]["available"], false);
    let c = guest(&v, "c1");
    assert_eq!(
        (c["state"].as_str(), c["loaded"].is_null()),
        (Some("stopped"), true)
    );
    assert_eq!(c["namespace"], "lxc-c1_<-x>");
    // Stopped: nothing to flag even without AppArmor.
    let o = aa_virt(empty.path(), &["list", "-P", &p, "--check", "--no-denials"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("note: AppArmor not available"));
}
