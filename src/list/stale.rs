//! Per guest on this host: does the policy the kernel runs match the
//! policy on disk ([`crate::apparmor::freshness`])? A package upgrade that
//! changed an abstraction, or an admin's edit of a `local/` file, leaves a
//! running guest on its old policy until `aa-virt reload`; this says so.
//!
//! A container's profile is rendered at each start from its config and
//! aa-virt's built-in template, so a new aa-virt with a changed template (or
//! an edited config, or a changed allowance not yet applied) leaves the
//! stored file as it was: for a container root loads, the profile is also
//! rendered now and compared with the stored one.

use std::path::PathBuf;

use super::{GuestRow, ListOptions, ListReport};
use crate::apparmor::{self, freshness, Freshness, Parser, SystemKernel};
use crate::guest::GuestKind;
use crate::libvirt::conn;
use crate::lxc::profile::Rerender;
use crate::policy::files::written_by_aa_virt;

/// Where a listed guest's aa-virt profile comes from.
#[derive(Debug, Clone)]
pub struct ProfileSource {
    /// The profile's name in the kernel.
    pub profile: String,
    /// Its source file (which may not exist).
    pub path: PathBuf,
    /// The parser, with the cache, that loads of this kind of guest use.
    pub parser: Parser,
}

/// The aa-virt profile of guest `g` on this host, with the parser its
/// loads use (built on `base`); `None` for a remote libvirt guest or one
/// without a profile name.
pub fn profile_source(opts: &ListOptions, g: &GuestRow, base: &Parser) -> Option<ProfileSource> {
    match (g.kind, &g.profile) {
        (GuestKind::Qemu, Some(p)) if conn::is_local_uri(&g.source) => Some(ProfileSource {
            profile: p.clone(),
            path: opts.layout.profile_path(p),
            parser: opts.layout.parser(base),
        }),
        (GuestKind::Lxc, _) => {
            let dir = PathBuf::from(&g.source);
            let canon = std::fs::canonicalize(&dir).unwrap_or(dir);
            let names = crate::lxc::Names::derive(&g.name, &canon);
            Some(ProfileSource {
                path: opts.lxc_layout.profile_path(&names),
                profile: names.profile,
                parser: opts.lxc_layout.parser(base),
            })
        }
        _ => None,
    }
}

/// Fill in [`GuestRow::policy`] and [`GuestRow::stale`] for every guest
/// whose aa-virt profile is loaded here, comparing with what the options'
/// parser compiles from disk. A stale guest also gets a problem line.
/// Nothing when [`ListOptions::staleness`] is off.
pub fn assess(opts: &ListOptions, report: &mut ListReport) {
    let base = &opts.parser;
    if !opts.staleness || !report.apparmor.available {
        return;
    }
    let kernel = apparmor::select(SystemKernel::at(opts.root.clone()));
    let mut render = Rerender::new(opts.templates.as_deref(), &opts.parser);
    for g in report.guests.iter_mut().filter(|g| g.loaded == Some(true)) {
        let Some(src) = profile_source(opts, g, base).filter(|s| s.path.is_file()) else {
            continue;
        };
        // A guest libvirt's own virt-aa-helper confines was never loaded by
        // aa-virt, so it has no load record: not aa-virt's to call stale.
        if g.kind == GuestKind::Qemu && !written_by_aa_virt(&opts.layout.files_path(&src.profile)) {
            continue;
        }
        let Some(mut f) = freshness(kernel.as_ref(), &src.parser, &src.profile, &src.path) else {
            continue;
        };
        if f == Freshness::Current && g.rendered_by_root() {
            if let Some(why) = lxc_drift(opts, g, &src, &mut render) {
                f = Freshness::Stale(why);
            }
        }
        if let Freshness::Stale(why) = &f {
            g.problems.push(format!(
                "profile {} is stale: {why}; `aa-virt reload {}` loads the current policy",
                src.profile, g.name
            ));
        }
        g.stale = Some(f != Freshness::Current);
        g.policy = Some(f.describe());
    }
}

/// Why the profile a root load of container `g` would store now differs
/// from the stored one, or `None` when it does not (or cannot be told).
fn lxc_drift(
    opts: &ListOptions,
    g: &GuestRow,
    src: &ProfileSource,
    render: &mut Rerender,
) -> Option<String> {
    if let Err(e) = render.prepare() {
        tracing::debug!("templates for the drift check: {e}");
        return None;
    }
    let ct = crate::lxc::Container::open(&g.name, std::path::Path::new(&g.source)).ok()?;
    let now = match render.render(&ct, &opts.lxc_layout.allow_dir) {
        Ok(now) => now?,
        Err(e) => {
            return Some(format!(
                "its profile no longer renders from its config ({e})"
            ))
        }
    };
    let stored = std::fs::read_to_string(&src.path).ok()?;
    (now != stored).then(|| {
        "its profile renders differently now (aa-virt's container template, its config or its allowances changed since it was loaded)".to_string()
    })
}

impl ListReport {
    /// Guests whose loaded policy is not the policy on disk.
    pub fn stale(&self) -> impl Iterator<Item = &GuestRow> {
        self.guests.iter().filter(|g| g.stale == Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::fake::FakeTree;
    use crate::apparmor::Root;
    use crate::libvirt::profile::Layout;
    use crate::list::{AppArmorInfo, DenialInfo, LogChoice, SCHEMA_VERSION};

    #[test]
    fn staleness_only_when_asked() {
        let d = tempfile::tempdir().unwrap();
        let prof = "libvirt-00000000-0000-4000-8000-000000000001";
        FakeTree::new(d.path())
            .unwrap()
            .load(prof, "enforce")
            .unwrap();
        let layout = Layout::under(d.path());
        std::fs::create_dir_all(layout.libvirt_dir()).unwrap();
        std::fs::write(layout.profile_path(prof), "profile x {}\n").unwrap();
        let files = format!("{}\n", crate::policy::files::FILES_HEADER);
        std::fs::write(layout.files_path(prof), files).unwrap();
        let mut opts = ListOptions {
            uris: vec![],
            default_uris: false,
            lxcpaths: vec![],
            root: Root::new(d.path()),
            layout,
            lxc_layout: crate::lxc::Layout::under(d.path()),
            log: LogChoice::Off,
            parser: Parser::new(),
            staleness: false,
            templates: None,
        };
        let mut g = GuestRow::new(
            "vm",
            GuestKind::Qemu,
            "qemu:///system".into(),
            "running",
            true,
        );
        g.profile = Some(prof.into());
        g.loaded = Some(true);
        let mut report = ListReport {
            schema_version: SCHEMA_VERSION,
            apparmor: AppArmorInfo {
                available: true,
                reason: None,
                profiles_loaded: Some(1),
                ns_stacked: None,
            },
            denials: DenialInfo {
                source: None,
                note: None,
            },
            sources: vec![],
            guests: vec![g],
        };
        assess(&opts, &mut report);
        assert_eq!(report.guests[0].stale, None, "not asked: no include walk");
        opts.staleness = true;
        assess(&opts, &mut report);
        // Loaded, but with no record of aa-virt loading it.
        assert_eq!(report.guests[0].stale, Some(true));
    }
}
