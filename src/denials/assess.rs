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
}

/// Denials QEMU is known to cause that need no access: the path and why.
fn noise() -> Vec<(Pattern, &'static str)> {
    let lit = |s: &str| Pattern::literal(s.as_bytes().to_vec());
    vec![
        (
            lit("/proc/").glob("*").lit("/task/").glob("*").lit("/comm"),
            "QEMU names its threads; the name only shows in ps",
        ),
        (
            lit("/dev/shm/lttng-ust-wait-").glob("*"),
            "LTTng tracing probe in QEMU's libraries; tracing stays off",
        ),
        (
            lit("/sys/kernel/mm/transparent_hugepage/").glob("*"),
            "QEMU probes transparent huge pages and falls back without them",
        ),
        (
            lit("/run/systemd/userdb/").glob("*"),
            "glibc's NSS asks systemd-userdb; passwd lookups still work",
        ),
    ]
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

/// What the domain XML element that would name this path is.
fn xml_hint(path: &str) -> &'static str {
    let image = [".img", ".qcow2", ".raw", ".iso", ".vmdk", ".vdi", ".qed"];
    if image.iter().any(|e| path.ends_with(e)) {
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
            a.message = match disk {
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
            return a;
        }
        if v.allowed {
            let by: Vec<String> = v.allow.iter().map(|r| r.source.describe()).collect();
            a.message = format!("allowed now, by {}", by.join(", "));
            a.suggestion = None;
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
            a.message = why;
            a.suggestion = Some("restricted: aa-virt will not grant this".into());
            return a;
        }
        a.message = xml_hint(path).to_string();
        if entry.kind == Kind::Libvirt && !want.is_empty() {
            a.suggestion = Some(format!(
                "aa-virt allow {} {} --perms {want} --reason '...'",
                shell_quote(&entry.name),
                shell_quote(path)
            ));
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
        assert_eq!(
            a.suggestion.as_deref(),
            Some("restricted: aa-virt will not grant this")
        );
        let a = assess(&rec("/srv/extra img.img", "r"), Some((e, &p)));
        assert_eq!(
            a.suggestion.as_deref(),
            Some("aa-virt allow vm1 '/srv/extra img.img' --perms r --reason '...'")
        );
        assert!(a.message.contains("<disk>"));
        let a = assess(&rec("/proc/12/task/13/comm", "w"), Some((e, &p)));
        assert!(a.noise.is_some() && a.suggestion.is_none());
        // Unmanaged: nothing suggested.
        assert_eq!(assess(&rec("/srv/x", "r"), None).suggestion, None);
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
