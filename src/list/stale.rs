//! Per guest on this host: does the policy the kernel runs match the
//! policy on disk ([`crate::apparmor::freshness`])? A package upgrade that
//! changed an abstraction, or an admin's edit of a `local/` file, leaves a
//! running guest on its old policy until `aa-virt reload`; this says so.

use std::path::PathBuf;

use super::{GuestRow, ListOptions, ListReport};
use crate::apparmor::{self, freshness, Freshness, Parser, SystemKernel};
use crate::guest::GuestKind;
use crate::libvirt::conn;
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
pub fn assess(opts: &ListOptions, report: &mut ListReport) {
    let base = &opts.parser;
    if !report.apparmor.available {
        return;
    }
    let kernel = apparmor::select(SystemKernel::at(opts.root.clone()));
    for g in report.guests.iter_mut().filter(|g| g.loaded == Some(true)) {
        let Some(src) = profile_source(opts, g, base).filter(|s| s.path.is_file()) else {
            continue;
        };
        // A guest libvirt's own virt-aa-helper confines was never loaded by
        // aa-virt, so it has no load record: not aa-virt's to call stale.
        if g.kind == GuestKind::Qemu && !written_by_aa_virt(&opts.layout.files_path(&src.profile)) {
            continue;
        }
        let Some(f) = freshness(kernel.as_ref(), &src.parser, &src.profile, &src.path) else {
            continue;
        };
        if let Freshness::Stale(why) = &f {
            g.problems.push(format!(
                "profile {} is stale: {why}; `aa-virt reload {}` applies the policy on disk",
                src.profile, g.name
            ));
        }
        g.stale = Some(f != Freshness::Current);
        g.policy = Some(f.describe());
    }
}

impl ListReport {
    /// Guests whose loaded policy is not the policy on disk.
    pub fn stale(&self) -> impl Iterator<Item = &GuestRow> {
        self.guests.iter().filter(|g| g.stale == Some(true))
    }
}
