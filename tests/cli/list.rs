//! `aa-virt list` / `status` against libvirt's in-process test driver: a
//! node file of domains built from the corpus, and `test:///default`. The
//! kernel side is a fake securityfs/procfs tree (AA_VIRT_SYSROOT) in the
//! kernel's exact formats; rule files are rendered by the real engine and
//! compiled by the real apparmor_parser.

use std::path::{Path, PathBuf};

use crate::common::list::*;
use aa_virt::apparmor::fake::FakeTree;
use aa_virt::libvirt::conn::Conn;
use serde_json::Value;

const TEST_UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<(usize, usize)> {
    let a = s.find(open)?;
    let b = a + s[a..].find(close)? + close.len();
    let _: &'a str = &s[a..b];
    Some((a, b))
}

/// Rewrite a corpus domain with a unique name and UUID, optionally shut off
/// (the test driver's `<test:runstate>`).
fn rewrite(xml: &str, name: &str, uuid: &str, shutoff: bool) -> Option<String> {
    let mut s = xml.to_string();
    if let Some((a, b)) = between(&s, "<?xml", "?>") {
        s.replace_range(a..b, "");
    }
    let (a, b) = between(&s, "<name>", "</name>")?;
    s.replace_range(a..b, &format!("<name>{name}</name>"));
    match between(&s, "<uuid>", "</uuid>") {
        Some((a, b)) => s.replace_range(a..b, &format!("<uuid>{uuid}</uuid>")),
        None => {
            let at = s.find("</name>")? + "</name>".len();
            s.insert_str(at, &format!("<uuid>{uuid}</uuid>"));
        }
    }
    if shutoff {
        let at = s.find("<domain ")? + "<domain ".len();
        s.insert_str(
            at,
            "xmlns:test='http://libvirt.org/schemas/domain/test/1.0' ",
        );
        let end = s.rfind("</domain>")?;
        s.insert_str(end, "<test:runstate>5</test:runstate>\n");
    }
    Some(s)
}

struct Node {
    path: PathBuf,
    /// (name, uuid, running, source XML file)
    domains: Vec<(String, String, bool, PathBuf)>,
}

/// A node file with up to `want` corpus domains the test driver accepts;
/// every third one is shut off.
fn corpus_node(dir: &Path, want: usize) -> Node {
    let src = corpus().join("qemuxmlconfdata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", src.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    assert!(files.len() > 500, "corpus too small: {}", files.len());
    let probe = dir.join("probe.xml");
    let mut body = String::new();
    let mut domains = Vec::new();
    for f in files {
        if domains.len() == want {
            break;
        }
        let i = domains.len();
        let name = format!("g{i:03}-{}", f.file_stem().unwrap().to_string_lossy());
        let uuid = format!("00000000-0000-4000-8000-{i:012}");
        let shutoff = i % 3 == 2;
        let Some(x) = std::fs::read_to_string(&f)
            .ok()
            .and_then(|x| rewrite(&x, &name, &uuid, shutoff))
        else {
            continue;
        };
        // Keep only what this libvirt's test driver accepts.
        std::fs::write(&probe, format!("<node>\n{x}\n</node>\n")).unwrap();
        match Conn::open(&format!("test://{}", probe.display())) {
            Ok(c) => c.close().unwrap(),
            Err(_) => continue,
        }
        body.push_str(&x);
        body.push('\n');
        domains.push((name, uuid, !shutoff, f));
    }
    assert_eq!(domains.len(), want, "not enough corpus domains accepted");
    let path = dir.join("node.xml");
    std::fs::write(&path, format!("<node>\n{body}</node>\n")).unwrap();
    Node { path, domains }
}

/// Render a corpus domain's `.files` with the real engine, check that it
/// compiles, and install it under `root`.
fn install_files(root: &Path, xml: &Path, name: &str, uuid: &str) -> usize {
    use aa_virt::libvirt::{self, profile};
    let x = rewrite(&std::fs::read_to_string(xml).unwrap(), name, uuid, false).unwrap();
    let g = libvirt::parse(
        &x,
        &libvirt::ReadOptions {
            probe_chains: false,
            ..Default::default()
        },
    )
    .unwrap();
    let t = aa_virt::policy::Templates::load(None).unwrap();
    let r = profile::render(&g, &t, false).unwrap();
    r.check(&g, &t, &aa_virt::apparmor::Parser::new())
        .expect("rendered profile compiles");
    let layout = profile::Layout::under(root);
    std::fs::create_dir_all(layout.libvirt_dir()).unwrap();
    std::fs::write(layout.profile_path(&r.name), &r.profile).unwrap();
    std::fs::write(layout.files_path(&r.name), &r.files).unwrap();
    r.rules.len()
}

#[test]
fn corpus_node_with_many_domains() {
    let d = tempfile::tempdir().unwrap();
    let node = corpus_node(d.path(), 45);
    let uri = format!("test://{}", node.path.display());
    let running: Vec<_> = node.domains.iter().filter(|x| x.2).collect();
    let (a, b, c) = (running[0], running[1], running[2]);

    // Kernel: A enforce, B complain, C not loaded; a stray profile too.
    let sys = d.path().join("sys");
    let mut t = FakeTree::new(&sys).unwrap();
    t.load(&format!("libvirt-{}", a.1), "enforce").unwrap();
    t.load(&format!("libvirt-{}", b.1), "complain").unwrap();
    t.load("/usr/sbin/libvirtd", "enforce").unwrap();
    // Policy files: the real engine's .files for A.
    let pol = d.path().join("pol");
    let rules = install_files(&pol, &a.3, &a.0, &a.1);
    assert!(rules > 0);
    // Log: two denials for A, one for another profile, one load of A.
    let log = d.path().join("audit.log");
    let deny = |p: &str, path: &str| {
        format!("type=AVC msg=audit(1732800000.100:7): apparmor=\"DENIED\" operation=\"open\" class=\"file\" profile=\"{p}\" name=\"{path}\" pid=99 comm=\"qemu-system-x86\" requested_mask=\"wr\" denied_mask=\"w\" fsuid=64055 ouid=0\n")
    };
    std::fs::write(
        &log,
        format!(
            "{}{}{}type=AVC msg=audit(1732800050.000:8): apparmor=\"STATUS\" operation=\"profile_replace\" profile=\"unconfined\" name=\"libvirt-{}\" pid=5 comm=\"apparmor_parser\"\n",
            deny(&format!("libvirt-{}", a.1), "/etc/shadow"),
            deny(&format!("libvirt-{}", a.1), "/var/lib/x"),
            deny("/usr/sbin/libvirtd", "/y"),
            a.1
        ),
    )
    .unwrap();
    // `aa-virt allow` and `aa-virt mode` state for guest a.
    let state = aa_virt::policy::allow::dir_under(&pol);
    aa_virt::policy::allow::add(&state, &a.1, &a.0, Path::new("/srv/extra.img"), "r", "test")
        .unwrap();
    aa_virt::policy::allow::set_mode(&state, &a.1, &a.0, Some(true)).unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "list".into(),
            "--connect".into(),
            uri.clone(),
            "--root".into(),
            pol.display().to_string(),
            "--log".into(),
            log.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        aa_virt(&sys, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let o = run(&["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v = check_schema(&out(&o));
    assert_eq!(v["apparmor"]["available"], true);
    assert_eq!(v["apparmor"]["profiles_loaded"], 3);
    assert_eq!(v["sources"][0]["ok"], true);
    assert_eq!(v["sources"][0]["guests"], 45);
    assert_eq!(v["sources"][0]["security_model"], "testSecurity");
    let gs = v["guests"].as_array().unwrap();
    assert_eq!(gs.len(), 45);
    for (name, uuid, run_, _) in &node.domains {
        let g = guest(&v, name);
        assert_eq!(g["uuid"], uuid.as_str());
        assert_eq!(g["kind"], "qemu");
        assert_eq!(g["profile"], format!("libvirt-{uuid}"));
        assert_eq!(g["active"], *run_, "{name}");
        assert_eq!(g["state"], if *run_ { "running" } else { "shut off" });
        if !run_ {
            assert_eq!(g["confined"], Value::Null);
            assert_eq!(g["label_ok"], Value::Null);
        }
    }
    let ga = guest(&v, &a.0);
    assert_eq!(ga["loaded"], true);
    assert_eq!(ga["mode"], "enforce");
    assert_eq!(ga["rules"], rules);
    assert_eq!(ga["allowances"], 1);
    assert_eq!(ga["stored_mode"], "complain");
    assert_eq!(ga["denials"], 2);
    // The test driver reports label "libvirt-test": not the expected one.
    assert_eq!(ga["label_source"], "libvirt");
    assert_eq!(ga["label"], "libvirt-test");
    assert_eq!(ga["label_ok"], false);
    assert_eq!(ga["confined"], false);
    let probs = ga["problems"].to_string();
    assert!(
        probs.contains("testSecurity") && probs.contains("runs as libvirt-test"),
        "{probs}"
    );
    let gb = guest(&v, &b.0);
    assert_eq!(gb["mode"], "complain");
    assert!(gb["problems"].to_string().contains("complain mode"));
    assert_eq!(gb["rules"], Value::Null);
    assert_eq!(gb["allowances"], 0);
    assert_eq!(gb["stored_mode"], Value::Null);
    assert_eq!(gb["denials"], 0);
    let gc = guest(&v, &c.0);
    assert_eq!(gc["loaded"], false);
    assert!(gc["problems"].to_string().contains("is not loaded"));

    // The table: a header and one line per guest, kernel columns filled.
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(0));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("NAME")
            && lines[0].contains("LABEL OK")
            && lines[0].ends_with("DENIALS")
    );
    assert_eq!(lines.iter().filter(|l| l.contains(" qemu ")).count(), 45);
    let la = lines.iter().find(|l| l.starts_with(&a.0)).unwrap();
    let cols: Vec<&str> = la.split_whitespace().collect();
    assert_eq!(
        &cols[3..],
        &[
            &format!("libvirt-{}", a.1)[..],
            "yes",
            "enforce",
            "no",
            "-",
            "-",
            &rules.to_string(),
            "2"
        ]
    );

    // --check: exit 3, every running guest named (none is confined).
    let o = run(&["--check"]);
    assert_eq!(o.status.code(), Some(3));
    let e = err(&o);
    for (name, _, r, _) in &node.domains {
        assert_eq!(
            e.contains(&format!("not confined: {name} ")),
            *r,
            "{name}: {e}"
        );
    }
}

#[test]
fn default_test_driver_without_apparmor() {
    let empty = tempfile::tempdir().unwrap();
    let o = aa_virt(
        empty.path(),
        &["list", "--connect", "test:///default", "--no-denials"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let t = out(&o);
    let row = t.lines().find(|l| l.starts_with("test ")).expect(&t);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "test",
            "qemu",
            "running",
            &format!("libvirt-{TEST_UUID}")[..],
            "n/a",
            "n/a",
            "n/a",
            "-",
            "-",
            "-",
            "-"
        ]
    );
    assert!(t.contains("note: AppArmor not available"), "{t}");

    let o = aa_virt(
        empty.path(),
        &["list", "-c", "test:///default", "--json", "--no-denials"],
    );
    let v = check_schema(&out(&o));
    assert_eq!(v["apparmor"]["available"], false);
    assert_eq!(v["guests"][0]["uuid"], TEST_UUID);
    assert_eq!(v["guests"][0]["loaded"], Value::Null);
    assert_eq!(v["guests"][0]["denials"], Value::Null);

    let o = aa_virt(
        empty.path(),
        &["list", "-c", "test:///default", "--check", "--no-denials"],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(err(&o).contains("not confined: test (qemu, test:///default): AppArmor not available"));
}

#[test]
fn several_uris_and_a_failing_one() {
    let d = tempfile::tempdir().unwrap();
    let node = corpus_node(d.path(), 4);
    let uri = format!("test://{}", node.path.display());
    let missing = format!("test://{}/missing.xml", d.path().display());
    let o = aa_virt(
        d.path(),
        &[
            "list",
            "--json",
            "-c",
            "test:///default",
            "-c",
            &uri,
            "-c",
            &missing,
            "--no-denials",
        ],
    );
    // The listing did not fully work: exit 1, the error on stderr, the
    // rest still listed.
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("missing.xml"), "{}", err(&o));
    let v = check_schema(&out(&o));
    let src = v["sources"].as_array().unwrap();
    assert_eq!(src.len(), 3);
    assert_eq!(
        (
            src[0]["ok"].clone(),
            src[1]["ok"].clone(),
            src[2]["ok"].clone()
        ),
        (true.into(), true.into(), false.into())
    );
    assert!(src[2]["error"].as_str().unwrap().contains("cannot connect"));
    assert_eq!(v["guests"].as_array().unwrap().len(), 5);
    assert_eq!(guest(&v, "test")["source"], "test:///default");
}

#[test]
fn status_rules_origins_cache_and_denied_devices() {
    let d = tempfile::tempdir().unwrap();
    let node = corpus_node(d.path(), 3);
    let uri = format!("test://{}", node.path.display());
    let a = &node.domains[0];
    let profile = format!("libvirt-{}", a.1);
    let sys = d.path().join("sys");
    FakeTree::new(&sys)
        .unwrap()
        .load(&profile, "enforce")
        .unwrap();
    let pol = d.path().join("pol");
    let n = install_files(&pol, &a.3, &a.0, &a.1);
    let layout = aa_virt::libvirt::profile::Layout::under(&pol);
    let files = std::fs::read_to_string(layout.files_path(&profile)).unwrap();
    // A path the rules cover: the first exact one, with its device.
    let first = aa_virt::policy::files::rules(&files)
        .into_iter()
        .find(|r| r.pattern.as_ref().is_some_and(|p| p.is_exact()) && !r.origins.is_empty())
        .expect("an exact rule");
    let covered = String::from_utf8(first.pattern.unwrap().exact_bytes().unwrap()).unwrap();
    let log = d.path().join("audit.log");
    std::fs::write(
        &log,
        format!(
            "type=AVC msg=audit(1732800000.1:1): apparmor=\"DENIED\" operation=\"open\" class=\"file\" profile=\"{profile}\" name=\"{covered}\" pid=42 comm=\"qemu-system-x86\" requested_mask=\"wc\" denied_mask=\"c\" fsuid=0 ouid=0\n\
             type=AVC msg=audit(1732800001.1:2): apparmor=\"DENIED\" operation=\"open\" class=\"file\" profile=\"{profile}\" name=\"/etc/shadow\" pid=42 comm=\"qemu-system-x86\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0\n\
             type=AVC msg=audit(1732800002.0:3): apparmor=\"STATUS\" operation=\"profile_load\" profile=\"unconfined\" name=\"{profile}\" pid=5 comm=\"apparmor_parser\"\n"
        ),
    )
    .unwrap();
    // A cache entry newer than the sources.
    let cache = layout.cache_dir.join("26b63962.0");
    std::fs::create_dir_all(&cache).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(cache.join(&profile), b"binary").unwrap();

    let common = [
        "-c",
        &uri,
        "--root",
        pol.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ];
    let mut args = vec!["status", &a.1, "--json"];
    args.extend(common);
    let o = aa_virt(&sys, &args);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["guest"]["name"], a.0.as_str());
    assert_eq!(v["rules"].as_array().unwrap().len(), n);
    assert_eq!(
        v["rules"][0]["origins"].as_array().map(|o| !o.is_empty()),
        Some(true)
    );
    assert_eq!(v["cache_state"], "fresh");
    assert_eq!(v["loaded_at"], 1732800002u64);
    assert_eq!(v["loaded_at_source"], "audit log");
    assert!(v["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["role"] == "rules" && f["exists"] == true && f["mtime"].is_u64()));
    let den = v["denials"].as_array().unwrap();
    assert_eq!(den.len(), 2);
    assert_eq!(den[0]["name"], covered.as_str());
    assert_eq!(den[0]["devices"], serde_json::json!(first.origins));
    assert_eq!(den[1]["devices"], serde_json::json!([]));

    // Text form, by name.
    let mut args = vec!["status", &a.0];
    args.extend(common);
    let t = out(&aa_virt(&sys, &args));
    assert!(
        t.contains(&format!("device: {}", first.origins.join("; "))),
        "{t}"
    );
    assert!(t.contains("device: none (no rule covers this path)"), "{t}");
    assert!(t.contains("cache:     fresh"), "{t}");

    // Allowances and the kept mode show, and the state file is listed.
    let state = aa_virt::policy::allow::dir_under(&pol);
    aa_virt::policy::allow::add(&state, &a.1, &a.0, Path::new("/srv/x.img"), "rw", "t").unwrap();
    aa_virt::policy::allow::set_mode(&state, &a.1, &a.0, Some(true)).unwrap();
    let t = out(&aa_virt(&sys, &args));
    assert!(t.contains("allowed:   1 path(s) with aa-virt allow"), "{t}");
    assert!(t.contains("(kept: complain, aa-virt mode)"), "{t}");
    assert!(
        t.contains("state") && t.contains(&format!("guests/{}.json", a.1)),
        "{t}"
    );

    // Stale once the rules change after the cache was written.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(layout.files_path(&profile), files.as_bytes()).unwrap();
    let mut args = vec!["status", &a.0, "--json"];
    args.extend(common);
    let v: Value = serde_json::from_str(&out(&aa_virt(&sys, &args))).unwrap();
    assert_eq!(v["cache_state"], "stale");

    // Unknown guest: an error naming where we looked.
    let mut args = vec!["status", "nope"];
    args.extend(common);
    let o = aa_virt(&sys, &args);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("no guest named \"nope\""), "{}", err(&o));
}

#[test]
fn status_renders_rules_from_the_domain_xml_when_nothing_is_installed() {
    let empty = tempfile::tempdir().unwrap();
    let o = aa_virt(
        empty.path(),
        &[
            "status",
            "test",
            "-c",
            "test:///default",
            "--root",
            empty.path().to_str().unwrap(),
            "--json",
            "--no-denials",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: Value = serde_json::from_str(&out(&o)).unwrap();
    assert!(v["rules_from"].as_str().unwrap().contains("domain XML"));
    let rules = v["rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["rule"] == "\"/guest/diskimage1\" rwk,"
                && r["origins"] == serde_json::json!(["disk vda"])),
        "{rules:?}"
    );
    assert_eq!(v["cache_state"], "n/a");
    assert_eq!(v["apparmor"]["available"], false);
}
