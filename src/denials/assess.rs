//! What one denial means for its guest: the device whose rule covers the
//! path with fewer permissions, a deny rule, a restricted path, known
//! QEMU noise, or what would grant it.

use std::path::Path;

use crate::guest::Access;
use crate::policy::escape::Pattern;
use crate::policy::explain::Policy;
use crate::policy::paths::restriction;

use super::catalog::{GuestEntry, Kind};
use super::record::Record;

/// The verdict on one record.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Assessment {
    /// The device (or allowance) whose rule covers the path, when one does.
    pub device: Option<String>,
    /// The path is on aa-virt's restricted list for this access.
    pub restricted: bool,
    /// Known QEMU noise: why it is harmless.
    pub noise: Option<String>,
    /// What happened, in words.
    pub message: String,
    /// The fix: a domain XML change or an `aa-virt allow` command.
    pub suggestion: Option<String>,
    /// The access an `aa-virt allow` suggestion grants (folding widens it
    /// to every access denied on the same path).
    #[serde(skip)]
    pub grant: Option<Access>,
}

/// Denials QEMU is known to cause that need no access: the path and why.
///
/// Every entry must match a record QEMU really produced under aa-virt's
/// policy (the fixtures from the VM's logs, `tests/denials/`; a unit test
/// checks it). None has so far: on Debian 12 (QEMU 7.2) and 13 (QEMU 10.0)
/// the whole VM suite, and a guest run in complain mode (VM case 35), logged
/// no denial and no `ALLOWED` record of QEMU's own. The entries once
/// listed here never occurred and were dropped: `/proc/PID/task/TID/comm`
/// (the abstraction grants it to its owner), `/dev/shm/lttng-ust-wait-*`
/// (an explicit `deny` in the abstraction, which the kernel does not log),
/// `/sys/kernel/mm/transparent_hugepage/*` (`enabled` is granted; QEMU read
/// nothing else there) and `/run/systemd/userdb/*` (QEMU made no NSS
/// lookup).
fn noise() -> Vec<(Pattern, &'static str)> {
    Vec::new()
}

/// Turn a kernel permission mask (`r`, `wc`, `rwk`...) into access; `None`
/// when it holds exec (`x`) or is not a file mask.
pub fn mask_access(mask: &str) -> Option<Access> {
    let mut a = Access::default();
    for c in mask.chars() {
        let add = match c {
            'r' => "r",
            // Create and delete need write in profiles.
            'w' | 'c' | 'd' => "w",
            'a' => "a",
            'k' => "k",
            'l' => "l",
            'm' => "m",
            _ => return None,
        };
        a = a.union(Access::parse(add)?);
    }
    (!a.is_empty()).then_some(a)
}

/// Quote a path for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The path looks like a disk image by its name.
fn is_image(path: &str) -> bool {
    let image = [".img", ".qcow2", ".raw", ".iso", ".vmdk", ".vdi", ".qed"];
    image.iter().any(|e| path.ends_with(e))
}

/// What an allowance for `want` on `path` should grant a QEMU guest: QEMU
/// takes OFD locks on every image it opens (file-posix `locking=auto`), so
/// an image gets `k` too, as aa-virt's disk rules have it. Without it the
/// open succeeds and the lock is denied next (seen in VM case 35).
pub fn qemu_grant(path: &str, want: Access) -> Access {
    let lock = if is_image(path) {
        Access::parse("k").unwrap_or_default()
    } else {
        Access::default()
    };
    Access {
        mmap: false,
        ..want.union(lock)
    }
}

/// The `aa-virt allow` command that grants `grant` on `path` to `guest`.
pub fn allow_command(guest: &str, path: &str, grant: Access) -> String {
    format!(
        "aa-virt allow {} {} --perms {grant} --reason '...'",
        shell_quote(guest),
        shell_quote(path)
    )
}

/// What the domain XML element that would name this path is.
fn xml_hint(path: &str) -> &'static str {
    if is_image(path) {
        "a <disk> in the domain XML (or the <backingStore> of the disk whose image uses it) would name it"
    } else if path.starts_with("/dev/") {
        "a <disk type='block'> or <hostdev> in the domain XML would name it"
    } else {
        "no device of the domain XML names it"
    }
}

/// Assess one record of guest `guest` whose policy (read back from disk)
/// is `policy`; `None` for records of profiles aa-virt does not manage.
pub fn assess(rec: &Record, guest: Option<(&GuestEntry, &Policy)>) -> Assessment {
    let mut a = Assessment::default();
    let op = rec.operation.as_deref().unwrap_or("?");
    let Some(path) = rec.name.as_deref().filter(|n| n.starts_with('/')) else {
        a.message = format!("{op} denied (not a file access)");
        return a;
    };
    let mask = rec
        .denied
        .as_deref()
        .or(rec.requested.as_deref())
        .unwrap_or("");
    let Some(want) = mask_access(mask) else {
        a.message = format!("{op} {path}: {mask} is not file access aa-virt can grant");
        return a;
    };
    if let Some(why) = noise()
        .iter()
        .find(|(p, _)| p.matches(path.as_bytes()))
        .map(|(_, w)| *w)
    {
        a.noise = Some(why.to_string());
    }
    let restricted = restriction(Path::new(path), want.writes(), false);
    a.restricted = restricted.is_some();
    if let Some((entry, policy)) = guest {
        let v = policy.explain(path.as_bytes(), want);
        let devices: Vec<&crate::policy::explain::FileRule> = v
            .allow
            .iter()
            .filter(|r| !r.source.origins.is_empty())
            .collect();
        if let Some(r) = devices.first() {
            let origin = r.source.origins.join("; ");
            a.device = Some(origin.clone());
            let disk = r
                .source
                .origins
                .iter()
                .find(|o| o.starts_with("disk ") && !o.contains(','));
            let allowance = r.source.origins.iter().all(|o| o.starts_with("allow: "));
            a.message = match disk {
                _ if allowance && entry.kind == Kind::Libvirt => {
                    // `allow` replaces the path's allowance: keep what it
                    // grants and add what was denied.
                    let grant = qemu_grant(path, want.union(r.access));
                    a.grant = Some(grant);
                    a.suggestion = Some(allow_command(&entry.name, path, grant));
                    format!(
                        "{origin} grants only {}, the guest asked for {want}",
                        r.access
                    )
                }
                Some(d) if want.writes() && !r.access.writes() => {
                    a.suggestion = Some(format!(
                        "remove <readonly/> from {d} in the domain XML if the guest should write it"
                    ));
                    format!("{d} is read-only in the domain XML")
                }
                _ => format!(
                    "{origin} grants only {}, the guest asked for {want}",
                    v.granted
                ),
            };
        }
        if let Some(d) = v.deny.first() {
            a.message = format!(
                "a deny rule overrides any grant: {} ({})",
                d.text,
                d.source.describe()
            );
            a.suggestion = None;
            a.grant = None;
            return a;
        }
        if v.allowed {
            let by: Vec<String> = v.allow.iter().map(|r| r.source.describe()).collect();
            a.message = format!("allowed now, by {}", by.join(", "));
            a.suggestion = None;
            a.grant = None;
            return a;
        }
        if a.device.is_some() {
            return a;
        }
        if let Some(n) = &a.noise {
            a.message = format!("known QEMU noise: {n}");
            return a;
        }
        if let Some(why) = restricted {
            a.message = format!("restricted: aa-virt will not grant this ({why})");
            return a;
        }
        a.message = xml_hint(path).to_string();
        if entry.kind == Kind::Libvirt && !want.is_empty() {
            let grant = qemu_grant(path, want);
            a.grant = Some(grant);
            a.suggestion = Some(allow_command(&entry.name, path, grant));
        }
        return a;
    }
    a.message = match restricted {
        Some(why) => why,
        None => "profile not managed by aa-virt".into(),
    };
    a
}

#[cfg(test)]
mod tests {
    use super::super::catalog::tests::root_with;
    use super::super::catalog::Catalog;
    use super::super::record::parse_line;
    use super::*;

    fn rec(name: &str, denied: &str) -> Record {
        parse_line(&format!(
            r#"type=AVC msg=audit(1.0:1): apparmor="DENIED" operation="open" profile="libvirt-x" name="{name}" pid=1 comm="qemu" requested_mask="{denied}" denied_mask="{denied}" fsuid=64055 ouid=0"#
        ))
        .unwrap()
    }

    /// Assess a record of guest vm1 whose `.files` holds `rules`.
    fn assess_with(rules: &str, r: &Record) -> Assessment {
        let d = root_with(rules);
        let c = Catalog::scan(d.path());
        let e = c.find("vm1").unwrap();
        let p = c.policy(e).unwrap();
        assess(r, Some((e, &p)))
    }

    #[test]
    fn device_restricted_noise_and_allow() {
        let d = root_with("  \"/srv/ro.img\" rk,  # disk vdb\n  \"/srv/base.qcow2\" rk,  # disk vda, backing layer 1\n");
        let c = Catalog::scan(d.path());
        let e = c.find("vm1").unwrap();
        let p = c.policy(e).unwrap();
        let a = assess(&rec("/srv/ro.img", "w"), Some((e, &p)));
        assert_eq!(a.device.as_deref(), Some("disk vdb"));
        assert_eq!(a.message, "disk vdb is read-only in the domain XML");
        assert!(!a.restricted);
        let a = assess(&rec("/srv/base.qcow2", "w"), Some((e, &p)));
        assert_eq!(a.device.as_deref(), Some("disk vda, backing layer 1"));
        assert!(a.message.contains("grants only rk"), "{}", a.message);
        let a = assess(&rec("/etc/shadow", "r"), Some((e, &p)));
        assert!(a.restricted && a.device.is_none());
        assert_eq!(a.suggestion, None);
        assert!(
            a.message
                .starts_with("restricted: aa-virt will not grant this (")
                && a.message.contains("/etc/shadow"),
            "{}",
            a.message
        );
        // An image: QEMU locks what it opens, so the lock comes with it.
        let a = assess(&rec("/srv/extra img.img", "r"), Some((e, &p)));
        assert_eq!(
            a.suggestion.as_deref(),
            Some("aa-virt allow vm1 '/srv/extra img.img' --perms rk --reason '...'")
        );
        assert!(a.message.contains("<disk>"));
        let a = assess(&rec("/srv/notes", "r"), Some((e, &p)));
        assert_eq!(
            a.suggestion.as_deref(),
            Some("aa-virt allow vm1 /srv/notes --perms r --reason '...'")
        );
        // Covered by an allowance with less: widen it (allow replaces it).
        let a = assess_with(
            "  \"/srv/extra.img\" r,  # allow: test\n",
            &rec("/srv/extra.img", "k"),
        );
        assert_eq!(a.device.as_deref(), Some("allow: test"));
        assert_eq!(
            a.suggestion.as_deref(),
            Some("aa-virt allow vm1 /srv/extra.img --perms rk --reason '...'")
        );
        // Unmanaged: nothing suggested.
        assert_eq!(assess(&rec("/srv/x", "r"), None).suggestion, None);
    }

    /// Each known-noise entry must match a record QEMU really produced:
    /// the VM's records (`tests/denials/`, from case 35 on Debian 12 and 13).
    #[test]
    fn every_noise_entry_matches_a_record_qemu_produced() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/denials");
        let mut qemu = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            qemu.extend(
                text.lines()
                    .filter_map(parse_line)
                    .filter(|r| r.comm.as_deref() == Some("qemu-system-x86")),
            );
        }
        assert!(
            qemu.len() >= 8,
            "the VM fixtures hold QEMU's records: {qemu:?}"
        );
        for (p, why) in noise() {
            assert!(
                qemu.iter()
                    .any(|r| r.name.as_deref().is_some_and(|n| p.matches(n.as_bytes()))),
                "known noise never seen in the VM's records: {why}"
            );
        }
    }

    #[test]
    fn masks() {
        assert_eq!(mask_access("wc"), Some(Access::W));
        assert_eq!(mask_access("rwk"), Some(Access::RWK));
        assert_eq!(mask_access("x"), None);
        assert_eq!(mask_access(""), None);
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
