//! Folding: one entry per repeated denial (same guest, profile, kind,
//! operation, path and masks), with a count and the first and last time,
//! each assessed once.

use std::collections::HashMap;

use serde::Serialize;

use super::assess::{allow_command, assess, Assessment};
use super::catalog::{Catalog, GuestEntry};
use super::record::Record;
use super::time;
use crate::guest::Access;
use crate::policy::explain::Policy;

/// Which records to keep.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this guest (its key, as [`Catalog::find`] returns it).
    pub guest: Option<String>,
    /// Only records at or after this time (seconds since the epoch).
    pub since: Option<u64>,
    /// Keep records of profiles aa-virt does not manage.
    pub all: bool,
}

/// One folded denial (or complain-mode `ALLOWED` record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// The guest's name; `null` for profiles aa-virt does not manage.
    pub guest: Option<String>,
    /// The profile (label) that decided.
    pub profile: String,
    /// Its policy namespace, when not the root.
    pub namespace: Option<String>,
    /// `DENIED`, or `ALLOWED` for a profile in complain mode.
    pub kind: String,
    /// `operation`.
    pub operation: String,
    /// The path, for file operations.
    pub path: Option<String>,
    /// `requested_mask`.
    pub requested: Option<String>,
    /// `denied_mask`.
    pub denied: Option<String>,
    /// How many records were folded into this one.
    pub count: usize,
    /// The first record's time (seconds since the epoch).
    pub first: Option<u64>,
    /// The last record's time.
    pub last: Option<u64>,
    /// The device whose rule covers the path (`null` when none).
    pub device: Option<String>,
    /// The path is restricted: aa-virt will not grant it.
    pub restricted: bool,
    /// Why it is known QEMU noise (`null` otherwise).
    pub noise: Option<String>,
    /// What happened.
    pub message: String,
    /// The fix (`null` when none).
    pub suggestion: Option<String>,
}

type Key = (
    Option<String>,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Fold and assess the `DENIED` and `ALLOWED` records that pass `filter`,
/// in order of first appearance.
pub fn fold(records: &[Record], catalog: &Catalog, filter: &Filter) -> Vec<Denial> {
    let mut out: Vec<Denial> = Vec::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    let mut policies: HashMap<String, Policy> = HashMap::new();
    // What each entry's allow suggestion grants, and its guest's key.
    let mut grants: Vec<Option<(String, Access)>> = Vec::new();
    for r in records {
        if r.kind != "DENIED" && r.kind != "ALLOWED" {
            continue;
        }
        if let (Some(since), Some(t)) = (filter.since, r.time) {
            if t < since {
                continue;
            }
        }
        let entry: Option<&GuestEntry> =
            catalog.by_label(r.profile.as_deref(), r.namespace.as_deref());
        match (&filter.guest, entry) {
            (Some(g), Some(e)) if &e.key != g => continue,
            (Some(_), None) => continue,
            (None, None) if !filter.all => continue,
            _ => {}
        }
        let profile = r.profile.clone().unwrap_or_default();
        let key: Key = (
            entry.map(|e| e.key.clone()),
            profile.clone(),
            r.kind.clone(),
            r.operation.clone().unwrap_or_default(),
            r.name.clone(),
            r.requested.clone(),
            r.denied.clone(),
        );
        if let Some(&i) = index.get(&key) {
            let d = &mut out[i];
            d.count += 1;
            d.first = min_opt(d.first, r.time);
            d.last = d.last.max(r.time);
            continue;
        }
        let a: Assessment = match entry {
            Some(e) => {
                let p = policies
                    .entry(e.key.clone())
                    .or_insert_with(|| catalog.policy(e).unwrap_or_default());
                assess(r, Some((e, p)))
            }
            None => assess(r, None),
        };
        index.insert(key, out.len());
        grants.push(entry.zip(a.grant).map(|(e, g)| (e.key.clone(), g)));
        out.push(Denial {
            guest: entry.map(|e| e.name.clone()),
            profile,
            namespace: r.namespace.clone(),
            kind: r.kind.clone(),
            operation: r.operation.clone().unwrap_or_default(),
            path: r.name.clone(),
            requested: r.requested.clone(),
            denied: r.denied.clone(),
            count: 1,
            first: r.time,
            last: r.time,
            device: a.device,
            restricted: a.restricted,
            noise: a.noise,
            message: a.message,
            suggestion: a.suggestion,
        });
    }
    widen(&mut out, &grants);
    out
}

/// One allowance per path: every allow suggestion for a guest's path
/// grants all that was denied on it (an open, then a lock...), so that
/// running any one of them fixes them all.
fn widen(out: &mut [Denial], grants: &[Option<(String, Access)>]) {
    let mut all: HashMap<(&str, &str), Access> = HashMap::new();
    for (d, g) in out.iter().zip(grants) {
        if let (Some((key, a)), Some(p)) = (g, &d.path) {
            let e = all.entry((key.as_str(), p.as_str())).or_default();
            *e = e.union(*a);
        }
    }
    let wide: Vec<Option<Access>> = out
        .iter()
        .zip(grants)
        .map(|(d, g)| {
            let (key, _) = g.as_ref()?;
            all.get(&(key.as_str(), d.path.as_deref()?)).copied()
        })
        .collect();
    for (d, w) in out.iter_mut().zip(wide) {
        if let (Some(w), Some(name), Some(p)) = (w, &d.guest, &d.path) {
            d.suggestion = Some(allow_command(name, p, w));
        }
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// One line per denial, for a terminal.
pub fn render_text(denials: &[Denial]) -> String {
    let mut s = String::new();
    for d in denials {
        let guest = d
            .guest
            .clone()
            .unwrap_or_else(|| format!("({})", d.profile));
        let when = match (d.first, d.last) {
            (Some(f), Some(l)) if f != l => format!("{} .. {}", time::format(f), time::format(l)),
            (Some(f), _) => time::format(f),
            _ => "-".into(),
        };
        let mask = d
            .denied
            .as_deref()
            .or(d.requested.as_deref())
            .unwrap_or("-");
        s.push_str(&format!(
            "{guest}  {} {} {} {mask}  x{}  [{when}]  {}",
            d.kind,
            d.operation,
            d.path.as_deref().unwrap_or("-"),
            d.count,
            d.message
        ));
        if let Some(n) = &d.noise {
            if !d.message.contains(n.as_str()) {
                s.push_str(&format!(" (known QEMU noise: {n})"));
            }
        }
        if let Some(fix) = &d.suggestion {
            s.push_str(&format!("  => {fix}"));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::catalog::tests::{root_with, UUID};
    use super::super::record::Summary;
    use super::*;

    /// Real formats: auditd, the kernel's printk (dmesg, kern.log) and the
    /// journal's `-o cat` of kernel messages, plus complain mode, a
    /// namespaced profile, a stacked label and a hex-encoded name.
    fn fixture() -> String {
        let p = format!("libvirt-{UUID}");
        [
            format!(r#"type=AVC msg=audit(1733300000.101:210): apparmor="DENIED" operation="open" class="file" profile="{p}" name="/srv/extra.img" pid=4242 comm="qemu-system-x86" requested_mask="r" denied_mask="r" fsuid=64055 ouid=64055"#),
            format!(r#"[ 5821.120034] audit: type=1400 audit(1733300060.500:211): apparmor="DENIED" operation="open" class="file" profile="{p}" name="/srv/extra.img" pid=4242 comm="qemu-system-x86" requested_mask="r" denied_mask="r" fsuid=64055 ouid=64055"#),
            format!(r#"audit: type=1400 audit(1733300070.000:212): apparmor="DENIED" operation="open" class="file" profile="{p}" name="/srv/ro.img" pid=4242 comm="qemu-system-x86" requested_mask="wr" denied_mask="w" fsuid=64055 ouid=64055"#),
            format!(r#"type=AVC msg=audit(1733300080.000:213): apparmor="DENIED" operation="open" class="file" profile="{p}" name="/etc/shadow" pid=4242 comm="qemu-system-x86" requested_mask="r" denied_mask="r" fsuid=64055 ouid=0"#),
            format!(r#"type=AVC msg=audit(1733300090.000:214): apparmor="ALLOWED" operation="open" class="file" profile="{p}" name=2F7372762F6D7920646174612E696D67 pid=4242 comm="qemu-system-x86" requested_mask="r" denied_mask="r" fsuid=64055 ouid=64055"#),
            r#"Dec 04 05:01:02 host kernel: audit: type=1400 audit(1733300100.000:215): apparmor="DENIED" operation="mount" class="mount" info="failed perms check" error=-13 profile="lxc-c1_</var/lib/lxc>-aa-virt//&:lxc-c1_<-var-lib-lxc>-aa-virt:unconfined" name="/proc/sys/" pid=99 comm="mount" fstype="proc" srcname="proc" flags="rw""#.to_string(),
            r#"audit: type=1400 audit(1733300110.000:216): apparmor="DENIED" operation="open" class="file" namespace="root//lxc-c1_<-var-lib-lxc>-aa-virt" profile="/usr/sbin/cupsd" name="/etc/x" pid=101 comm="cupsd" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#.to_string(),
            r#"type=AVC msg=audit(1733300120.000:217): apparmor="DENIED" operation="open" class="file" profile="/usr/sbin/ntpd" name="/etc/x" pid=7 comm="ntpd" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#.to_string(),
        ]
        .join("\n")
    }

    fn records() -> Vec<Record> {
        let mut s = Summary::default();
        s.scan(fixture().as_bytes(), &|_| true);
        s.kept
    }

    #[test]
    fn folds_attributes_and_hides_unmanaged() {
        let d = root_with("  \"/srv/ro.img\" rk,  # disk vdb\n");
        let c = Catalog::scan(d.path());
        let out = fold(&records(), &c, &Filter::default());
        let extra = &out[0];
        assert_eq!(extra.guest.as_deref(), Some("vm1"));
        assert_eq!(extra.path.as_deref(), Some("/srv/extra.img"));
        assert_eq!(
            (extra.count, extra.first, extra.last),
            (2, Some(1733300000), Some(1733300060))
        );
        assert_eq!(extra.device, None);
        assert!(extra
            .suggestion
            .as_deref()
            .unwrap()
            .starts_with("aa-virt allow vm1 /srv/extra.img --perms r"));
        let ro = &out[1];
        assert_eq!(ro.device.as_deref(), Some("disk vdb"));
        assert_eq!(ro.message, "disk vdb is read-only in the domain XML");
        let shadow = &out[2];
        assert!(shadow.restricted);
        assert_eq!(shadow.suggestion, None);
        assert!(shadow
            .message
            .starts_with("restricted: aa-virt will not grant this"));
        let allowed = &out[3];
        assert_eq!(allowed.kind, "ALLOWED");
        assert_eq!(allowed.path.as_deref(), Some("/srv/my data.img"));
        // The container: stacked label and namespaced profile both land on c1.
        assert_eq!(out[4].guest.as_deref(), Some("c1"));
        assert_eq!(out[5].guest.as_deref(), Some("c1"));
        assert_eq!(out.len(), 6, "ntpd is not ours: {out:#?}");
        let all = fold(
            &records(),
            &c,
            &Filter {
                all: true,
                ..Filter::default()
            },
        );
        assert_eq!(all.len(), 7);
        assert_eq!(all[6].guest, None);
        let only = fold(
            &records(),
            &c,
            &Filter {
                guest: Some(UUID.into()),
                since: Some(1733300070),
                all: false,
            },
        );
        assert_eq!(only.len(), 3);
        let text = render_text(&out);
        assert_eq!(text.lines().count(), 6);
        assert!(
            text.contains("x2  [2024-12-04 08:13:20 UTC .. 2024-12-04 08:14:20 UTC]"),
            "{text}"
        );
        let json = serde_json::to_value(&out).unwrap();
        for k in [
            "guest",
            "profile",
            "operation",
            "path",
            "requested",
            "denied",
            "count",
            "device",
            "restricted",
            "suggestion",
        ] {
            assert!(json[0].get(k).is_some(), "{k}");
        }
        assert!(json[0]["device"].is_null());
    }
}
