//! AppArmor audit records: one pass over the audit log (or the kernel log),
//! attributing `apparmor="DENIED"` records to profiles and namespaces and
//! remembering when each profile was last loaded.
//!
//! Both formats carry the same record text:
//! - auditd: `type=AVC msg=audit(1732800000.123:456): apparmor="DENIED" operation="open" profile="libvirt-…" name="/x" …`
//! - kernel log (dmesg, `kern.log`): `… audit: type=1400 audit(1732800000.123:456): apparmor="DENIED" …`
//! - the journal (`journalctl -o json`): kernel messages (`_TRANSPORT=kernel`,
//!   the kernel log's text) and, where journald listens on the audit socket
//!   (Debian 12), audit records (`_TRANSPORT=audit`: `MESSAGE=AVC
//!   apparmor="DENIED" …`, the time in `_SOURCE_REALTIME_TIMESTAMP`, the
//!   serial in `_AUDIT_ID`). The kernel's printk copy is rate-limited, so
//!   both are read and a record seen twice (same time and serial) counts
//!   once.
//!
//! Values the kernel considers unsafe (spaces, quotes, non-ASCII) are
//! written unquoted in hex; they are decoded here.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

/// Where records were read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "lowercase")]
pub enum LogSource {
    /// auditd's log file.
    Audit(PathBuf),
    /// The journal: the current boot's kernel messages and audit records.
    Journal,
    /// A syslog kernel log file.
    Kernel(PathBuf),
    /// A file named on the command line.
    File(PathBuf),
}

impl std::fmt::Display for LogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogSource::Audit(p) | LogSource::Kernel(p) | LogSource::File(p) => {
                write!(f, "{}", p.display())
            }
            LogSource::Journal => write!(f, "journalctl -b {}", JOURNAL_MATCHES.join(" ")),
        }
    }
}

/// One AppArmor audit record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Record {
    /// `DENIED`, `AUDIT`, `ALLOWED`, `STATUS`, ...
    pub kind: String,
    /// Seconds since the epoch, from `audit(SECS.MS:SERIAL)`.
    pub time: Option<u64>,
    /// `operation`.
    pub operation: Option<String>,
    /// `profile`: the profile that decided (for STATUS, the loader's).
    pub profile: Option<String>,
    /// `namespace`, without the leading `root//`; `None` for the root.
    pub namespace: Option<String>,
    /// `name`: the path (file class) or the loaded profile (STATUS).
    pub name: Option<String>,
    /// `requested_mask`.
    pub requested: Option<String>,
    /// `denied_mask`.
    pub denied: Option<String>,
    /// `class`.
    pub class: Option<String>,
    /// `pid`.
    pub pid: Option<u32>,
    /// `comm`.
    pub comm: Option<String>,
    /// `info`.
    pub info: Option<String>,
    /// The audit serial number, from `audit(SECS.MS:SERIAL)` or the
    /// journal's `_AUDIT_ID`: with the time, it identifies the record.
    pub serial: Option<u64>,
}

/// Decode one `key=value` value: `"quoted"` as is, unquoted even-length
/// upper-case hex decoded (the kernel's encoding of unsafe strings), other
/// unquoted text as is.
fn decode(v: &str) -> String {
    if let Some(q) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return q.to_string();
    }
    let hex = v.len() >= 2
        && v.len() % 2 == 0
        && v.bytes()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c));
    if hex {
        let bytes: Option<Vec<u8>> = (0..v.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v[i..i + 2], 16).ok())
            .collect();
        if let Some(b) = bytes {
            return String::from_utf8_lossy(&b).into_owned();
        }
    }
    v.to_string()
}

/// Split `k="v w" k2=v2 …` into pairs, honouring quotes.
fn fields(s: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        let key = &s[ks..i];
        i += 1;
        let vs = i;
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += 1;
            }
            i = (i + 1).min(b.len());
        } else {
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
        }
        out.push((key, &s[vs..i]));
    }
    out
}

/// Parse one log line; `None` when it is not an AppArmor record. A line of
/// `journalctl -o json` is read through its `MESSAGE` field.
pub fn parse_line(line: &str) -> Option<Record> {
    if line.trim_start().starts_with('{') {
        return parse_journal_json(line);
    }
    let at = line.find("apparmor=")?;
    let stamp = line.find("audit(").map(|p| &line[p + 6..]);
    let digits = |s: &str| -> Option<u64> {
        let d: String = s.chars().take_while(char::is_ascii_digit).collect();
        d.parse().ok()
    };
    let time = stamp.and_then(digits);
    let serial = stamp
        .and_then(|s| s.split_once(':'))
        .and_then(|(_, s)| digits(s));
    let mut r = Record {
        kind: String::new(),
        time,
        operation: None,
        profile: None,
        namespace: None,
        name: None,
        requested: None,
        denied: None,
        class: None,
        pid: None,
        comm: None,
        info: None,
        serial,
    };
    for (k, raw) in fields(&line[at..]) {
        if k == "pid" {
            r.pid = raw.parse().ok();
            continue;
        }
        let v = decode(raw);
        match k {
            "apparmor" => r.kind = v,
            "operation" => r.operation = Some(v),
            "profile" => r.profile = Some(v),
            "namespace" => {
                let ns = v.strip_prefix("root//").unwrap_or(&v);
                r.namespace = (v != "root").then(|| ns.to_string());
            }
            "name" => r.name = Some(v),
            "requested_mask" => r.requested = Some(v),
            "denied_mask" => r.denied = Some(v),
            "class" => r.class = Some(v),
            "comm" => r.comm = Some(v),
            "info" => r.info = Some(v),
            _ => {}
        }
    }
    (!r.kind.is_empty()).then_some(r)
}

/// A journal entry in `journalctl -o json` form: its `MESSAGE` parsed as
/// a log line, with the time and serial from the entry's fields when the
/// message has no `audit(...)` stamp (audit transport).
fn parse_journal_json(line: &str) -> Option<Record> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let msg = match v.get("MESSAGE")? {
        serde_json::Value::String(s) => s.clone(),
        // Messages that are not UTF-8 come as an array of bytes.
        serde_json::Value::Array(a) => {
            let b: Vec<u8> = a
                .iter()
                .filter_map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect();
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => return None,
    };
    if msg.trim_start().starts_with('{') {
        return None;
    }
    let mut r = parse_line(&msg)?;
    let num = |k: &str| -> Option<u64> { v.get(k)?.as_str()?.parse().ok() };
    if r.time.is_none() {
        r.time = num("_SOURCE_REALTIME_TIMESTAMP")
            .or_else(|| num("__REALTIME_TIMESTAMP"))
            .map(|us| us / 1_000_000);
    }
    if r.serial.is_none() {
        r.serial = num("_AUDIT_ID");
    }
    Some(r)
}

/// Records already seen: the journal holds the same record twice where it
/// reads both the kernel log and the audit socket. A copy has the same
/// time, serial and fields (records of one syscall share a serial, so the
/// serial alone is not enough).
#[derive(Debug, Clone, Default)]
pub struct Seen(HashSet<Record>);

impl Seen {
    /// True the first time a record is offered (and for records without a
    /// time or serial, which cannot be told apart).
    pub fn first(&mut self, r: &Record) -> bool {
        match (r.time, r.serial) {
            (Some(_), Some(_)) => self.0.insert(r.clone()),
            _ => true,
        }
    }
}

/// What one pass over the log found.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Where it came from (`None`: no log could be read).
    pub source: Option<LogSource>,
    /// Why no log was read, or what went wrong reading it.
    pub note: Option<String>,
    /// Denials by (namespace, profile).
    pub denials: HashMap<(Option<String>, String), usize>,
    /// Denials by namespace (every profile in it).
    pub ns_denials: HashMap<String, usize>,
    /// Last load or replace time of each (namespace, profile).
    pub loads: HashMap<(Option<String>, String), u64>,
    /// The records kept for detail (when a filter was given).
    pub kept: Vec<Record>,
}

impl Summary {
    /// Denials attributed to profile `name` in namespace `ns`.
    pub fn denials_of(&self, ns: Option<&str>, name: &str) -> usize {
        self.denials
            .get(&(ns.map(str::to_string), name.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Denials by any profile inside namespace `ns`.
    pub fn denials_in(&self, ns: &str) -> usize {
        self.ns_denials.get(ns).copied().unwrap_or(0)
    }

    /// Add one record. `keep` decides which records are kept in full.
    pub fn add(&mut self, r: Record, keep: &dyn Fn(&Record) -> bool) {
        match r.kind.as_str() {
            "DENIED" => {
                if let Some(p) = &r.profile {
                    *self
                        .denials
                        .entry((r.namespace.clone(), p.clone()))
                        .or_default() += 1;
                }
                if let Some(ns) = &r.namespace {
                    *self.ns_denials.entry(ns.clone()).or_default() += 1;
                }
            }
            "STATUS" => {
                let loading = matches!(
                    r.operation.as_deref(),
                    Some("profile_load") | Some("profile_replace")
                );
                if let (true, Some(name), Some(t)) = (loading, &r.name, r.time) {
                    let e = self
                        .loads
                        .entry((r.namespace.clone(), name.clone()))
                        .or_default();
                    *e = (*e).max(t);
                }
            }
            _ => {}
        }
        if keep(&r) {
            self.kept.push(r);
        }
    }

    /// Read every line of `input`; a record that appears twice (the
    /// journal's kernel and audit copies) counts once.
    pub fn scan(&mut self, input: impl BufRead, keep: &dyn Fn(&Record) -> bool) {
        let mut seen = Seen::default();
        for line in input.split(b'\n').map_while(Result::ok) {
            // Cheap test first: most lines are not AppArmor's.
            if !contains(&line, b"apparmor=") {
                continue;
            }
            if let Some(r) = parse_line(&String::from_utf8_lossy(&line)) {
                if seen.first(&r) {
                    self.add(r, keep);
                }
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Which log to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogChoice {
    /// auditd's log if readable, else the journal's kernel messages if
    /// there is a journal, else `/var/log/kern.log`, all under `root`.
    Auto,
    /// This file.
    File(PathBuf),
    /// Do not read any log.
    Off,
}

/// One pass over the chosen log. Never fails: a log that cannot be read
/// gives an empty summary with a note.
pub fn read(choice: &LogChoice, root: &Path, keep: &dyn Fn(&Record) -> bool) -> Summary {
    let mut s = Summary::default();
    let open = |p: &Path| std::fs::File::open(p).map(std::io::BufReader::new);
    match choice {
        LogChoice::Off => s.note = Some("not read (--no-denials)".into()),
        LogChoice::File(p) => match open(p) {
            Ok(f) => {
                s.source = Some(LogSource::File(p.clone()));
                s.scan(f, keep);
            }
            Err(e) => s.note = Some(format!("cannot read {}: {e}", p.display())),
        },
        LogChoice::Auto => {
            let audit = root.join("var/log/audit/audit.log");
            let kern = root.join("var/log/kern.log");
            let journal = ["var/log/journal", "run/log/journal"]
                .iter()
                .any(|d| root.join(d).is_dir());
            if let Ok(f) = open(&audit) {
                s.source = Some(LogSource::Audit(audit));
                s.scan(f, keep);
            } else if journal && root == Path::new("/") {
                match journal_kernel() {
                    Ok(out) => {
                        s.source = Some(LogSource::Journal);
                        s.scan(&out[..], keep);
                    }
                    Err(e) => s.note = Some(e),
                }
            } else if let Ok(f) = open(&kern) {
                s.source = Some(LogSource::Kernel(kern));
                s.scan(f, keep);
            } else {
                s.note = Some(format!(
                    "no readable log: {} (auditd), the journal and {} are unavailable",
                    audit.display(),
                    kern.display()
                ));
            }
        }
    }
    s
}

/// The journal's matches for AppArmor records: kernel messages (the
/// printk copy of audit records) and audit records (journald's audit
/// socket), OR-ed by journalctl.
pub const JOURNAL_MATCHES: [&str; 2] = ["_TRANSPORT=kernel", "_TRANSPORT=audit"];

/// The current boot's kernel and audit messages from the journal, one JSON
/// entry per line (one process).
fn journal_kernel() -> Result<Vec<u8>, String> {
    let out = Command::new("journalctl")
        .args(["-b", "-o", "json", "-q", "--no-pager"])
        .args(JOURNAL_MATCHES)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run journalctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "journalctl -b {} failed: {}",
            JOURNAL_MATCHES.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT: &str = r#"type=AVC msg=audit(1732800000.123:456): apparmor="DENIED" operation="open" class="file" profile="libvirt-6695eb01-f6a4-8304-79aa-97f2502e193f" name="/etc/shadow" pid=1234 comm="qemu-system-x86" requested_mask="r" denied_mask="r" fsuid=64055 ouid=0"#;
    /// The same denial again, a later event.
    const AUDIT2: &str = r#"type=AVC msg=audit(1732800001.5:457): apparmor="DENIED" operation="open" class="file" profile="libvirt-6695eb01-f6a4-8304-79aa-97f2502e193f" name="/etc/shadow" pid=1234 comm="qemu-system-x86" requested_mask="r" denied_mask="r" fsuid=64055 ouid=0"#;

    #[test]
    fn parses_both_formats_and_hex() {
        let r = parse_line(AUDIT).unwrap();
        assert_eq!(r.kind, "DENIED");
        assert_eq!(r.time, Some(1732800000));
        assert_eq!(
            r.profile.as_deref(),
            Some("libvirt-6695eb01-f6a4-8304-79aa-97f2502e193f")
        );
        assert_eq!(r.name.as_deref(), Some("/etc/shadow"));
        assert_eq!(r.pid, Some(1234));
        assert_eq!(r.denied.as_deref(), Some("r"));

        let k = r#"[ 12.5] audit: type=1400 audit(1732800001.000:9): apparmor="DENIED" operation="mkdir" namespace="root//lxc-a_<-var-lib-lxc>" profile="snap.x" name=2F746D702F6120622F pid=7 comm="sh" requested_mask="c" denied_mask="c" fsuid=0 ouid=0"#;
        let r = parse_line(k).unwrap();
        assert_eq!(r.namespace.as_deref(), Some("lxc-a_<-var-lib-lxc>"));
        assert_eq!(r.name.as_deref(), Some("/tmp/a b/"));
        assert_eq!(r.profile.as_deref(), Some("snap.x"));
        assert!(parse_line("kernel: something else").is_none());
        // `journalctl -k -o json` (journald's _TRANSPORT=kernel records).
        let j = serde_json::json!({"_TRANSPORT": "kernel", "MESSAGE": k}).to_string();
        assert_eq!(parse_line(&j).unwrap().name.as_deref(), Some("/tmp/a b/"));
        assert!(parse_line(r#"{"MESSAGE": "apparmor= {"}"#).is_none());
    }

    #[test]
    fn one_pass_attributes_and_keeps() {
        let log = format!(
            "{AUDIT}\n{AUDIT2}\n{AUDIT}\nnoise\n\
             type=AVC msg=audit(1732800100.0:1): apparmor=\"STATUS\" operation=\"profile_replace\" profile=\"unconfined\" name=\"libvirt-6695eb01-f6a4-8304-79aa-97f2502e193f\" pid=1 comm=\"apparmor_parser\"\n\
             type=AVC msg=audit(1732800200.0:2): apparmor=\"DENIED\" operation=\"open\" namespace=\"root//ns1\" profile=\"p\" name=\"/x\" pid=2 comm=\"c\" requested_mask=\"r\" denied_mask=\"r\"\n"
        );
        let mut s = Summary::default();
        s.scan(log.as_bytes(), &|r| r.kind == "DENIED");
        assert_eq!(
            s.denials_of(None, "libvirt-6695eb01-f6a4-8304-79aa-97f2502e193f"),
            2
        );
        assert_eq!(s.denials_of(Some("ns1"), "p"), 1);
        assert_eq!(s.denials_in("ns1"), 1);
        assert_eq!(
            s.loads.get(&(
                None,
                "libvirt-6695eb01-f6a4-8304-79aa-97f2502e193f".to_string()
            )),
            Some(&1732800100)
        );
        assert_eq!(s.kept.len(), 3);
    }

    #[test]
    fn auto_under_a_root_reads_audit_then_kern_log() {
        let d = tempfile::tempdir().unwrap();
        let s = read(&LogChoice::Auto, d.path(), &|_| false);
        assert!(s.source.is_none() && s.note.is_some());
        std::fs::create_dir_all(d.path().join("var/log")).unwrap();
        std::fs::write(d.path().join("var/log/kern.log"), format!("{AUDIT}\n")).unwrap();
        let s = read(&LogChoice::Auto, d.path(), &|_| false);
        assert!(matches!(s.source, Some(LogSource::Kernel(_))));
        assert_eq!(s.denials.values().sum::<usize>(), 1);
        std::fs::create_dir_all(d.path().join("var/log/audit")).unwrap();
        std::fs::write(
            d.path().join("var/log/audit/audit.log"),
            format!("{AUDIT}\n{AUDIT2}\n"),
        )
        .unwrap();
        let s = read(&LogChoice::Auto, d.path(), &|_| false);
        assert!(matches!(s.source, Some(LogSource::Audit(_))));
        assert_eq!(s.denials.values().sum::<usize>(), 2);
    }
}
