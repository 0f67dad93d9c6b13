//! Real AppArmor records from the VM (`integration-vms` case 35, Debian 12
//! and 13), in the formats each release really has: the kernel's printk
//! copy (dmesg) and the journal as `journalctl -o json` (on Debian 12 it
//! holds every record twice, from the kernel log and from journald's audit
//! socket). Each file is attributed to the case's guests: the libvirt
//! domain `aavt-deny` (`libvirt-<uuid>`) and the LXC container `d1` (by its
//! profile); every format folds to the same entries and counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aa_virt::denials::catalog::Catalog;
use aa_virt::denials::fold::{fold, Denial, Filter};
use aa_virt::denials::record::{read, LogChoice};
use aa_virt::lxc::Names;
use aa_virt::policy::files::FILES_HEADER;

const UUID: &str = "3c5d7e9f-1a2b-4c3d-9e8f-7a6b5c4d3e2f";
const GUEST: &str = "aavt-deny";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/denials")
        .join(name)
}

/// The container's lxcpath, as the records name it (`lxc-d1_<LXCPATH>-aa-virt`).
fn lxcpath(text: &str) -> String {
    let start = text.find("lxc-d1_<").expect("a record of container d1") + "lxc-d1_<".len();
    let len = text[start..]
        .find(">-aa-virt")
        .expect("aa-virt's profile name");
    text[start..start + len].to_string()
}

/// A root with what aa-virt wrote for the case's two guests.
fn root_for(lxcpath: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let lv = d.path().join("etc/apparmor.d/libvirt");
    std::fs::create_dir_all(&lv).unwrap();
    std::fs::write(
        lv.join(format!("libvirt-{UUID}.files")),
        format!(
            "{FILES_HEADER}\n# Device rules for libvirt guest \"{GUEST}\" ({UUID}), regenerated whenever\n  \"/var/lib/libvirt/images/aavt-deny/root.img\" rwk,  # disk vda\n"
        ),
    )
    .unwrap();
    let names = Names::derive("d1", Path::new(lxcpath));
    let lxc = d.path().join("var/lib/aa-virt/lxc");
    std::fs::create_dir_all(&lxc).unwrap();
    std::fs::write(
        lxc.join(names.file_name()),
        format!(
            "# AppArmor profile for LXC container \"d1\" in {lxcpath}.\nprofile \"{}\" {{\n  file,\n}}\n",
            names.profile
        ),
    )
    .unwrap();
    d
}

/// Fold one fixture file for the case's guests.
fn folded(name: &str) -> Vec<Denial> {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let root = root_for(&lxcpath(&text));
    let s = read(&LogChoice::File(path), root.path(), &|r| {
        r.kind == "DENIED" || r.kind == "ALLOWED"
    });
    assert!(s.source.is_some(), "{name}: {:?}", s.note);
    let out = fold(&s.kept, &Catalog::scan(root.path()), &Filter::default());
    check(name, &out);
    out
}

fn find<'a>(out: &'a [Denial], kind: &str, op: &str, path: &str, comm_guest: &str) -> &'a Denial {
    out.iter()
        .find(|d| {
            d.kind == kind
                && d.operation == op
                && d.path.as_deref() == Some(path)
                && d.guest.as_deref() == Some(comm_guest)
        })
        .unwrap_or_else(|| panic!("no {kind} {op} {path} for {comm_guest} in {out:#?}"))
}

/// What case 35 provoked, attributed and assessed.
fn check(name: &str, out: &[Denial]) {
    let allow = format!("aa-virt allow {GUEST} /srv/extra.img --perms rk --reason '...'");
    // QEMU's drive_add: the open is denied; the suggestion adds the lock
    // QEMU takes next (granted with it, so no lock denial follows).
    let open = find(out, "DENIED", "open", "/srv/extra.img", GUEST);
    assert_eq!(open.profile, format!("libvirt-{UUID}"), "{name}");
    assert_eq!(open.device, None, "{name}");
    assert!(!open.restricted, "{name}");
    assert_eq!(open.suggestion.as_deref(), Some(allow.as_str()), "{name}");
    // A restricted path: no suggestion.
    let shadow = find(out, "DENIED", "open", "/etc/shadow", GUEST);
    assert!(shadow.restricted, "{name}");
    assert_eq!(shadow.suggestion, None, "{name}");
    // Complain mode: ALLOWED records (the open, then the lock), reviewed
    // like denials; one suggestion covers both.
    let late = format!("aa-virt allow {GUEST} /srv/complain.img --perms rk --reason '...'");
    for op in ["open", "file_lock"] {
        let d = find(out, "ALLOWED", op, "/srv/complain.img", GUEST);
        assert_eq!(d.suggestion.as_deref(), Some(late.as_str()), "{name} {op}");
    }
    // The container's denied rbind of /proc/sys, by its profile.
    let mount = find(out, "DENIED", "mount", "/tmp/aavp/", "d1");
    assert_eq!(mount.suggestion, None, "{name}");
    assert!(
        mount.profile.starts_with("lxc-d1_<"),
        "{name}: {}",
        mount.profile
    );
    // Nothing of these guests is known noise.
    assert!(out.iter().all(|d| d.noise.is_none()), "{name}");
}

/// Counts per folded entry, to compare formats.
fn counts(out: &[Denial]) -> BTreeMap<String, usize> {
    out.iter()
        .map(|d| {
            (
                format!(
                    "{:?} {} {} {:?} {:?}",
                    d.guest, d.kind, d.operation, d.path, d.denied
                ),
                d.count,
            )
        })
        .collect()
}

#[test]
fn debian12_printk_audit_and_journal_agree() {
    let dmesg = folded("debian12-dmesg.log");
    let journal = folded("debian12-journal.json");
    // journald's audit records alone (`journalctl -o cat _TRANSPORT=audit`,
    // what the suite reads on Debian 12): no time, no serial, no copies.
    let audit = folded("debian12-audit.log");
    // The journal holds each record from the kernel log and from the audit
    // socket: folded once, the counts are the audit socket's.
    let raw = std::fs::read_to_string(fixture("debian12-journal.json")).unwrap();
    assert!(raw.contains("\"_TRANSPORT\":\"audit\"") && raw.contains("\"_TRANSPORT\":\"kernel\""));
    assert_eq!(counts(&audit), counts(&journal));
    // The printk copy is rate-limited: it may hold fewer, never more.
    let all = counts(&journal);
    for (k, n) in counts(&dmesg) {
        assert!(all.get(&k).is_some_and(|m| *m >= n), "{k}: {n} in dmesg");
    }
}

#[test]
fn debian13_printk_and_journal_agree() {
    let dmesg = folded("debian13-dmesg.log");
    let journal = folded("debian13-journal.json");
    assert_eq!(counts(&dmesg), counts(&journal));
}
