//! `aa-virt allow` / `disallow` for an LXC container aa-virt manages: the
//! same vetting as a disk, stored keyed by the container's profile name,
//! rendered into the profile the hooks load (origin `allow: REASON`), and
//! refused where a deny rule of the profile would void it. Loading into a
//! running container's kernel is proven in
//! `integration-vms/suite/cases/35-denials.sh`.

use aa_virt::lxc::{self as lxc, profile, Container, Layout};
use aa_virt::policy::{allow, Templates};

use crate::containers::{aa, enabled_busybox, state_root, text};

#[test]
fn allow_renders_lists_and_disallow_removes() {
    let (_d, lp) = enabled_busybox("ca1");
    let lps = lp.to_str().unwrap();
    let share = tempfile::tempdir().unwrap();
    let data = share.path().canonicalize().unwrap().join("data [1].img");
    std::fs::write(&data, b"x").unwrap();
    let ds = data.to_str().unwrap();

    let o = aa(
        &[
            "allow",
            "-P",
            lps,
            "ca1",
            ds,
            "--perms",
            "rw",
            "--reason",
            "test data",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("allowed rw on"), "{out}");
    // The stock template's broad `file,` already grants it: said, not hidden.
    assert!(out.contains("already granted rw by"), "{out}");
    // Under a state root nothing is loaded: stored for the next start.
    assert!(
        out.contains("stored; the guest's next start renders it"),
        "{out}"
    );

    // Stored keyed by the container's profile name.
    let names = lxc::Names::derive("ca1", &lp);
    let dir = allow::dir_under(state_root());
    let items = allow::load(&dir, &names.profile, "ca1").unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].path.as_str(), items[0].perms.as_str()),
        (ds, "rw")
    );

    // What the pre-start hook renders (the same render, with the stored
    // allowances) carries it with its origin, and compiles.
    let o = aa(&["lxc", "profile", "-P", lps, "ca1", "--check"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let prof = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = prof
        .lines()
        .find(|l| l.contains("data \\[1\\].img"))
        .unwrap_or_else(|| panic!("no allowance rule in:\n{prof}"));
    assert!(
        line.trim_start().ends_with("rw,  # allow: test data"),
        "{line}"
    );
    let ct = Container::open("ca1", &lp).unwrap();
    let templates = Templates::load(None).unwrap();
    let opts = lxc::probe_options(&aa_virt::apparmor::Parser::new());
    let layout = Layout::under(state_root());
    let hook_view = profile::render_stored(
        &ct,
        aa_virt::apparmor::ContainerMode::Stacked,
        &templates,
        opts,
        &layout.allow_dir,
    )
    .unwrap();
    assert!(hook_view.text.contains(line), "{}", hook_view.text);
    let plain = profile::render(
        &ct,
        aa_virt::apparmor::ContainerMode::Stacked,
        &templates,
        opts,
    )
    .unwrap();
    assert!(!plain.text.contains("allow: test data"));

    let o = aa(&["allow", "-P", lps, "ca1", "--list"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{ds}  rw  allow: test data")),
        "{}",
        text(&o)
    );

    // `list` counts them.
    let o = aa(&["list", "-P", lps, "--json", "--no-denials"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = v["guests"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "ca1"))
        .unwrap_or_else(|| panic!("ca1 not listed: {v:#}"));
    assert_eq!(row["allowances"], 1, "{row:#}");

    let o = aa(&["disallow", "-P", lps, "ca1", ds], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = aa(&["lxc", "profile", "-P", lps, "ca1"], &[]);
    assert!(!text(&o).contains("allow: test data"), "{}", text(&o));
    let o = aa(&["disallow", "-P", lps, "ca1", ds], &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no allowance for"), "{}", text(&o));
}

#[test]
fn allow_refuses_what_a_disk_would_be_refused_and_what_deny_rules_void() {
    let (_d, lp) = enabled_busybox("ca2");
    let lps = lp.to_str().unwrap();
    let dir = allow::dir_under(state_root());
    let key = lxc::Names::derive("ca2", &lp).profile;
    let o = aa(
        &["allow", "-P", lps, "ca2", "/etc/shadow", "--perms", "r"],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("refusing /etc/shadow") && text(&o).contains("ca2"),
        "{}",
        text(&o)
    );
    // /sys/kernel/debug is writable for no container: the template's deny
    // rule wins over any allow, so the allowance is refused, not stored.
    let o = aa(
        &[
            "allow",
            "-P",
            lps,
            "ca2",
            "/sys/kernel/debug/x",
            "--perms",
            "w",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("ca2"), "{}", text(&o));
    note_refusal(&text(&o));
    assert!(allow::load(&dir, &key, "ca2").unwrap().is_empty());
    // Not a container aa-virt manages: refused, naming it.
    let (_d2, lp2) = crate::containers::busybox("ca3");
    let o = aa(
        &[
            "allow",
            "-P",
            lp2.to_str().unwrap(),
            "ca3",
            "/srv/x",
            "--perms",
            "r",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("aa-virt does not manage it"),
        "{}",
        text(&o)
    );
    // `mode` stays a libvirt command.
    let o = aa(&["mode", "-P", lps, "ca2", "complain"], &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("libvirt guests"), "{}", text(&o));
}

/// The refusal of a path under a deny rule: either the restricted list or
/// the deny rule itself, with the reason.
fn note_refusal(out: &str) {
    assert!(
        out.contains("refusing /sys/kernel/debug/x")
            || out.contains("deny rules win over any allow"),
        "{out}"
    );
}
