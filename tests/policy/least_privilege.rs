//! What the templates grant, listed rule by rule and compared with a
//! reviewed allow-list (`tests/least-privilege.tsv`).
//!
//! For the QEMU abstractions (`templates/apparmor.d/abstractions/aa-virt-qemu`,
//! and `aa-virt-qemu-gl` for guests that use GL) and the LXC container template (`templates/lxc/container.hbs`, every
//! conditional branch at once), the test extracts the grants that matter
//! for confinement: capabilities, file rules with write access, device
//! nodes, change_profile, mount-family rules, and bare rule classes
//! (`file,` `mount,` `ptrace,` ...). Each must be listed in the TSV with how
//! it compares to the reference (libvirt's abstractions/libvirt-qemu, LXC's
//! container-base as described in `shared/notes/`); anything broader than
//! the reference carries its reason. The test fails on a grant that is not
//! listed, and on a listed grant that no longer exists (so the list stays
//! the truth).

use crate::common;

use std::collections::BTreeSet;

const TEMPLATES: &[(&str, &str)] = &[
    (
        "aa-virt-qemu",
        "templates/apparmor.d/abstractions/aa-virt-qemu",
    ),
    (
        "aa-virt-qemu-gl",
        "templates/apparmor.d/abstractions/aa-virt-qemu-gl",
    ),
    ("lxc-container", "templates/lxc/container.hbs"),
];

/// One grant: (template, kind, rule text normalised to single spaces).
type Grant = (String, String, String);

fn kind_of(rule: &str) -> Option<&'static str> {
    let r = rule.trim_end_matches(',').trim();
    let r = r.strip_prefix("audit ").unwrap_or(r);
    if r.starts_with("deny ") || r.starts_with('#') || r.is_empty() {
        return None;
    }
    let r = r.strip_prefix("owner ").unwrap_or(r);
    let first = r.split_whitespace().next().unwrap_or("");
    match first {
        "capability" => Some("capability"),
        "change_profile" => Some("change_profile"),
        "mount" | "umount" | "remount" | "pivot_root" => Some("mount"),
        "file" | "dbus" | "network" | "ptrace" | "signal" | "unix" | "userns"
            if !r.contains(' ') =>
        {
            Some("broad")
        }
        _ => {
            // A file rule: PATH PERMS [-> target]
            let mut it = r.split_whitespace();
            let path = it.next()?;
            let perms = it.next().unwrap_or("");
            if !(path.starts_with('/') || path.starts_with('@') || path.starts_with('"')) {
                return None;
            }
            let path = path.trim_matches('"');
            if path.starts_with("/dev/") {
                Some("device")
            } else if perms.contains('w') || perms.contains('a') {
                Some("write")
            } else {
                None
            }
        }
    }
}

fn grants() -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for (name, rel) in TEMPLATES {
        let text = std::fs::read_to_string(common::repo().join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        for line in text.lines() {
            let t = line.trim();
            // Handlebars control lines carry no rule; `{{#each}}` bodies are
            // rendered data (bind mounts, raw rules), checked elsewhere.
            if t.starts_with("{{") || t.starts_with('#') || t.is_empty() {
                continue;
            }
            if t.starts_with("{{line}}") || t == "{{this}}" {
                continue;
            }
            let t = t.split("  #").next().unwrap_or(t).trim();
            if let Some(k) = kind_of(t) {
                let norm = t.split_whitespace().collect::<Vec<_>>().join(" ");
                out.insert((name.to_string(), k.to_string(), norm));
            }
        }
    }
    out
}

#[test]
fn every_grant_is_reviewed() {
    let tsv = std::fs::read_to_string(common::repo().join("tests/least-privilege.tsv")).unwrap();
    let mut listed = BTreeSet::new();
    let mut broader = 0;
    for (n, line) in tsv.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            f.len(),
            5,
            "line {}: want 5 tab-separated fields: {line}",
            n + 1
        );
        let (tpl, kind, rule, cmp, reason) = (f[0], f[1], f[2], f[3], f[4]);
        assert!(
            ["same", "narrower", "broader", "not in reference"].contains(&cmp),
            "line {}: comparison {cmp:?} must be same|narrower|broader|not in reference",
            n + 1
        );
        if cmp == "broader" || cmp == "not in reference" {
            assert!(
                reason.len() > 15,
                "line {}: a grant {cmp} needs its reason written down",
                n + 1
            );
            broader += 1;
        }
        assert!(
            listed.insert((tpl.to_string(), kind.to_string(), rule.to_string())),
            "line {}: listed twice",
            n + 1
        );
    }
    let have = grants();
    let unlisted: Vec<String> = have
        .difference(&listed)
        .map(|(t, k, r)| format!("{t}\t{k}\t{r}"))
        .collect();
    let stale: Vec<String> = listed
        .difference(&have)
        .map(|(t, k, r)| format!("{t}\t{k}\t{r}"))
        .collect();
    assert!(
        unlisted.is_empty(),
        "grants not reviewed in tests/least-privilege.tsv (add them with the reference comparison and reason):\n{}",
        unlisted.join("\n")
    );
    assert!(
        stale.is_empty(),
        "tests/least-privilege.tsv lists grants the templates no longer have:\n{}",
        stale.join("\n")
    );
    eprintln!(
        "least privilege: {} grants reviewed, {broader} broader than or absent from the references, each with its reason",
        have.len()
    );
}

#[test]
fn the_extractor_sees_what_matters() {
    // Guard against a vacuous extractor.
    assert_eq!(kind_of("capability sys_admin,"), Some("capability"));
    assert_eq!(kind_of("deny capability kill,"), None);
    assert_eq!(kind_of("/dev/kvm rw,"), Some("device"));
    assert_eq!(kind_of("owner /tmp/**/ rw,"), Some("write"));
    assert_eq!(kind_of("/usr/share/qemu/** r,"), None);
    assert_eq!(kind_of("mount fstype=proc -> /proc/,"), Some("mount"));
    assert_eq!(
        kind_of("change_profile -> \":ns:*\","),
        Some("change_profile")
    );
    assert_eq!(kind_of("file,"), Some("broad"));
    assert_eq!(kind_of("signal (receive) peer=x,"), None);
    let g = grants();
    assert!(g
        .iter()
        .any(|(t, k, _)| t == "aa-virt-qemu" && k == "capability"));
    assert!(g
        .iter()
        .any(|(t, k, _)| t == "lxc-container" && k == "mount"));
}
