//! `aa-virt status NAME`: one guest in detail — its rules with their
//! origins, its files and their times, the compiled-policy cache, whether
//! and when the profile was loaded, the process label, and its recent
//! denials with the device each belongs to.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::denials::Record;
use super::report::yes_no as yn;
use super::{gather, AppArmorInfo, GuestRow, ListError, ListOptions, SCHEMA_VERSION};
use crate::denials::time::format as format_time;
use crate::guest::GuestKind;
use crate::libvirt::{self, conn::Conn};
use crate::lxc::sys as lxc;
use crate::policy::files::{self, ReadRule};

/// How many denials `status` shows.
pub const RECENT_DENIALS: usize = 20;

/// A policy file and its time.
#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    /// What it is: `profile`, `rules`, `local`.
    pub role: &'static str,
    /// Where.
    pub path: String,
    /// It exists.
    pub exists: bool,
    /// Modification time, seconds since the epoch.
    pub mtime: Option<u64>,
}

/// One compiled-policy cache entry.
#[derive(Debug, Clone, Serialize)]
pub struct CacheEntry {
    /// Where.
    pub path: String,
    /// Modification time.
    pub mtime: Option<u64>,
    /// Not older than the newest source file.
    pub fresh: bool,
}

/// A denial, with the device whose rule covers the path.
#[derive(Debug, Clone, Serialize)]
pub struct DenialDetail {
    /// Seconds since the epoch.
    pub time: Option<u64>,
    /// `operation`.
    pub operation: Option<String>,
    /// The path (or other object) denied.
    pub name: Option<String>,
    /// What was asked.
    pub requested: Option<String>,
    /// What was denied.
    pub denied: Option<String>,
    /// The process.
    pub comm: Option<String>,
    /// Its pid.
    pub pid: Option<u32>,
    /// The profile that denied.
    pub profile: Option<String>,
    /// The devices whose rule covers the path (`[]`: no rule covers it).
    pub devices: Vec<String>,
}

/// Everything `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The guest's row, as in `list`.
    pub guest: GuestRow,
    /// The kernel.
    pub apparmor: AppArmorInfo,
    /// The policy files.
    pub files: Vec<FileInfo>,
    /// Where the rules below come from.
    pub rules_from: Option<String>,
    /// Why there are no rules, when there are none.
    pub rules_note: Option<String>,
    /// Every rule with its origins.
    pub rules: Vec<ReadRule>,
    /// `fresh`, `stale`, `missing` (nothing cached) or `n/a`.
    pub cache_state: &'static str,
    /// Cache entries found.
    pub cache: Vec<CacheEntry>,
    /// When the profile was last loaded, seconds since the epoch.
    pub loaded_at: Option<u64>,
    /// Where that time comes from.
    pub loaded_at_source: Option<&'static str>,
    /// Where denials were read.
    pub denials_source: Option<String>,
    /// The most recent denials, oldest first.
    pub denials: Vec<DenialDetail>,
}

fn mtime(p: &Path) -> Option<u64> {
    std::fs::metadata(p)
        .ok()?
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

fn file_info(role: &'static str, p: PathBuf) -> FileInfo {
    let m = mtime(&p);
    FileInfo {
        role,
        exists: p.exists(),
        path: p.display().to_string(),
        mtime: m,
    }
}

/// Find `name` (a name or a UUID) among the listed guests.
pub fn pick(all: Vec<GuestRow>, name: &str, where_: &str) -> Result<GuestRow, ListError> {
    let mut hits: Vec<GuestRow> = all
        .into_iter()
        .filter(|g| {
            g.name == name
                || g.uuid
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(name))
        })
        .collect();
    match hits.len() {
        0 => Err(ListError::NotFound(name.to_string(), where_.to_string())),
        1 => Ok(hits.remove(0)),
        n => Err(ListError::Ambiguous {
            name: name.to_string(),
            count: n,
            where_: hits
                .iter()
                .map(|g| g.source.clone())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Rules rendered now from the domain XML (when no `.files` is installed).
fn rules_from_xml(uri: &str, name: &str) -> Result<Vec<ReadRule>, String> {
    let c = Conn::open(uri).map_err(|e| e.to_string())?;
    let xml = c.xml(name).map_err(|e| e.to_string());
    c.close().map_err(|e| e.to_string())?;
    let guest = libvirt::parse(
        &xml?,
        &libvirt::ReadOptions {
            probe_chains: false,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let set = crate::policy::derive(&guest).map_err(|e| e.to_string())?;
    Ok(set
        .rules()
        .iter()
        .enumerate()
        .map(|(i, r)| ReadRule::made(i + 1, r))
        .collect())
}

/// Gather the detail of one guest.
pub fn status(opts: &ListOptions, name: &str) -> Result<Detail, ListError> {
    let (report, summary) = gather(opts, |r: &Record| r.kind == "DENIED")?;
    let where_ = report
        .sources
        .iter()
        .map(|s| s.location.clone())
        .collect::<Vec<_>>()
        .join(", ");
    let guest = pick(report.guests, name, &where_)?;
    let layout = &opts.layout;
    let mut files = Vec::new();
    let mut rules = Vec::new();
    let mut rules_from = None;
    let mut rules_note = None;
    let mut sources: Vec<PathBuf> = Vec::new();
    let profile = guest.profile.clone();
    match (guest.kind, &profile) {
        (GuestKind::Qemu, Some(p)) => {
            let prof = layout.profile_path(p);
            let fpath = layout.files_path(p);
            let local = layout.apparmor_dir.join("local").join(p);
            files.push(file_info("profile", prof.clone()));
            files.push(file_info("rules", fpath.clone()));
            files.push(file_info("local", local.clone()));
            // Allowances and mode (`aa-virt allow`, `aa-virt mode`).
            if let Some(u) = crate::libvirt::naming::parse_profile_name(p) {
                let key = u.hyphenated().to_string();
                let state = crate::policy::allow::file_of(&layout.allow_dir, &key);
                files.push(file_info("state", state));
            }
            sources.extend([prof, fpath.clone(), local]);
            match std::fs::read_to_string(&fpath) {
                Ok(t) => {
                    rules = files::rules(&t);
                    rules_from = Some(fpath.display().to_string());
                }
                Err(_) => match rules_from_xml(&guest.source, &guest.name) {
                    Ok(r) => {
                        rules = r;
                        rules_from = Some(
                            "domain XML, rendered now: not installed, backing chains not probed"
                                .into(),
                        );
                    }
                    Err(e) => {
                        rules_note = Some(format!(
                            "{} is missing and the rules cannot be rendered: {e}",
                            fpath.display()
                        ))
                    }
                },
            }
        }
        (GuestKind::Lxc, Some(p)) => {
            let ct = lxc::get(Path::new(&guest.source), &guest.name)
                .ok()
                .flatten();
            let file = ct.as_ref().and_then(|c| {
                super::lxc_profile_file(&opts.lxc_layout, c, guest.namespace.as_deref())
            });
            if let Some(c) = &ct {
                files.push(file_info("config", c.config_file.clone()));
            }
            match file {
                Some(f) => {
                    files.push(file_info("profile", f.clone()));
                    sources.push(f.clone());
                    if let Ok(t) = std::fs::read_to_string(&f) {
                        rules = files::rules(&t);
                        rules_from = Some(f.display().to_string());
                    }
                }
                None => rules_note = Some(format!("no profile file for {p} found")),
            }
        }
        _ => rules_note = Some("no aa-virt profile for this guest".into()),
    }

    // Cache: apparmor_parser -L DIR writes DIR/<features-hash>/<basename>.
    let mut cache = Vec::new();
    sources.retain(|p| p.exists());
    let newest_src = sources.iter().filter_map(|p| mtime(p)).max();
    if let Some(base) = sources.first().and_then(|p| p.file_name()) {
        let mut cands = vec![layout.cache_dir.join(base)];
        if let Ok(rd) = std::fs::read_dir(&layout.cache_dir) {
            cands.extend(
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path().join(base)),
            );
        }
        for c in cands.into_iter().filter(|c| c.is_file()) {
            let m = mtime(&c);
            cache.push(CacheEntry {
                path: c.display().to_string(),
                mtime: m,
                fresh: matches!((m, newest_src), (Some(a), Some(b)) if a >= b),
            });
        }
    }
    let cache_state = if sources.is_empty() {
        "n/a"
    } else if cache.is_empty() {
        "missing"
    } else if cache.iter().any(|c| c.fresh) {
        "fresh"
    } else {
        "stale"
    };

    let (mut loaded_at, mut loaded_at_source) = (None, None);
    if let Some(p) = &profile {
        if let Some(t) = summary.loads.get(&(None, p.clone())) {
            loaded_at = Some(*t);
            loaded_at_source = Some("audit log");
        } else if guest.loaded == Some(true) {
            if let Ok(Some(d)) = opts.root.profile_dir(p) {
                loaded_at = mtime(&d);
                loaded_at_source = loaded_at.map(|_| "securityfs");
            }
        }
    }

    let mine = |r: &Record| match (&r.namespace, &r.profile) {
        (Some(ns), _) => guest.namespace.as_deref() == Some(ns.as_str()),
        (None, Some(p)) => profile.as_deref() == Some(p.as_str()),
        _ => false,
    };
    let mut denials: Vec<DenialDetail> = summary
        .kept
        .iter()
        .filter(|r| mine(r))
        .map(|r| DenialDetail {
            devices: r
                .name
                .as_deref()
                .and_then(|n| files::origin_of(&rules, n))
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
            time: r.time,
            operation: r.operation.clone(),
            name: r.name.clone(),
            requested: r.requested.clone(),
            denied: r.denied.clone(),
            comm: r.comm.clone(),
            pid: r.pid,
            profile: r.profile.clone(),
        })
        .collect();
    if denials.len() > RECENT_DENIALS {
        denials.drain(..denials.len() - RECENT_DENIALS);
    }

    Ok(Detail {
        schema_version: SCHEMA_VERSION,
        guest,
        apparmor: report.apparmor,
        files,
        rules_from,
        rules_note,
        rules,
        cache_state,
        cache,
        loaded_at,
        loaded_at_source,
        denials_source: report.denials.source,
        denials,
    })
}

fn opt(v: Option<&str>) -> &str {
    v.filter(|s| !s.is_empty()).unwrap_or("-")
}

/// The text form.
pub fn text(d: &Detail) -> String {
    let g = &d.guest;
    let na = if d.apparmor.available { "?" } else { "n/a" };
    let mut o = String::new();
    let mut line = |k: &str, v: String| o.push_str(&format!("{k:<11}{v}\n"));
    line("guest:", format!("{} ({}, {})", g.name, g.kind, g.source));
    if let Some(u) = &g.uuid {
        line("uuid:", u.clone());
    }
    line(
        "state:",
        format!(
            "{}{}",
            g.state,
            g.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        ),
    );
    if !d.apparmor.available {
        line(
            "apparmor:",
            format!(
                "AppArmor not available: {}",
                d.apparmor.reason.as_deref().unwrap_or("unknown reason")
            ),
        );
    }
    line(
        "profile:",
        format!(
            "{}  loaded: {}  mode: {}{}",
            opt(g.profile.as_deref()),
            yn(g.loaded, na),
            g.mode.as_deref().unwrap_or(na),
            g.stored_mode
                .as_deref()
                .map(|m| format!(" (kept: {m}, aa-virt mode)"))
                .unwrap_or_default()
        ),
    );
    if let Some(n) = g.allowances.filter(|n| *n > 0) {
        line(
            "allowed:",
            format!("{n} path(s) with aa-virt allow (rules from: allow: REASON)"),
        );
    }
    line(
        "loaded at:",
        match (d.loaded_at, d.loaded_at_source) {
            (Some(t), Some(s)) => format!("{} ({s})", format_time(t)),
            _ => "unknown".into(),
        },
    );
    line("expected:", opt(g.expected_label.as_deref()).to_string());
    line(
        "label:",
        match (&g.label, &g.label_mode) {
            (Some(l), m) => format!(
                "{}{}  (from {})  ok: {}",
                if l.is_empty() { "none" } else { l },
                m.as_deref().map(|m| format!(" ({m})")).unwrap_or_default(),
                g.label_source.unwrap_or("?"),
                yn(g.label_ok, na)
            ),
            (None, _) if !g.active => "- (not running)".into(),
            (None, _) => format!("unknown  ok: {}", yn(g.label_ok, na)),
        },
    );
    if let Some(ns) = &g.namespace {
        line(
            "namespace:",
            format!(
                "{ns}  exists: {}  profiles inside: {}",
                yn(g.namespace_exists, na),
                g.namespace_profiles
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into())
            ),
        );
    }
    if let Some(p) = &g.policy {
        line("policy:", p.clone());
    }
    line(
        "confined:",
        match g.confined {
            Some(true) => "yes".into(),
            Some(false) => format!("NO: {}", g.problems.join("; ")),
            None if g.problems.is_empty() => "- (not running)".into(),
            None => format!("- (not running; {})", g.problems.join("; ")),
        },
    );
    o.push_str("files:\n");
    for f in &d.files {
        o.push_str(&format!(
            "  {:<8} {}  {}\n",
            f.role,
            f.path,
            match (f.exists, f.mtime) {
                (true, Some(t)) => format!("modified {}", format_time(t)),
                (true, None) => "present".into(),
                (false, _) => "missing".into(),
            }
        ));
    }
    o.push_str(&format!("cache:     {}\n", d.cache_state));
    for c in &d.cache {
        o.push_str(&format!(
            "  {}  {}{}\n",
            c.path,
            c.mtime.map(format_time).unwrap_or_default(),
            if c.fresh {
                ""
            } else {
                "  (older than the sources)"
            }
        ));
    }
    o.push_str(&format!(
        "rules:     {}{}\n",
        d.rules.len(),
        d.rules_from
            .as_deref()
            .map(|s| format!(" (from {s})"))
            .unwrap_or_default()
    ));
    if let Some(n) = &d.rules_note {
        o.push_str(&format!("  {n}\n"));
    }
    for r in &d.rules {
        o.push_str(&format!("  {}\n", r.rule));
        if !r.origins.is_empty() {
            o.push_str(&format!("      from: {}\n", r.origins.join("; ")));
        }
    }
    o.push_str(&format!(
        "denials:   {}{}\n",
        d.denials.len(),
        d.denials_source
            .as_deref()
            .map(|s| format!(" recent (from {s})"))
            .unwrap_or_else(|| " (no log readable)".into())
    ));
    for x in &d.denials {
        o.push_str(&format!(
            "  {}  {} {} {} (denied {}) by {}[{}]  device: {}\n",
            x.time.map(format_time).unwrap_or_else(|| "-".into()),
            opt(x.operation.as_deref()),
            opt(x.name.as_deref()),
            opt(x.requested.as_deref()),
            opt(x.denied.as_deref()),
            opt(x.comm.as_deref()),
            x.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            if x.devices.is_empty() {
                "none (no rule covers this path)".to_string()
            } else {
                x.devices.join("; ")
            }
        ));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_732_800_000), "2024-11-28 13:20:00 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
