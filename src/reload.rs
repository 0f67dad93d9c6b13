//! `aa-virt reload`: replace the running guests' policy from what is on
//! disk, after an admin edited `/etc/apparmor.d/local/libvirt-<uuid>` or a
//! package upgraded `abstractions/aa-virt-qemu`.
//!
//! `systemctl reload apparmor` skips the subdirectories guest profiles live
//! in, so without this a running guest keeps its old policy until it
//! restarts. Only profiles the kernel has loaded are replaced (one not
//! loaded is loaded by the guest's next start), each one on its own, under
//! the guest's lock, with `apparmor_parser --replace` on the file as it is:
//! nothing is rendered or written, so admin edits are kept. A profile that
//! does not compile is reported and keeps running its previous policy (the
//! kernel swaps a profile atomically or not at all).
//!
//! A container root loads is the exception: its profile is aa-virt's
//! alone (rendered at each start from its config, aa-virt's template and
//! its allowances), so it is rendered again and stored before the load, as
//! its next start would. That applies a new aa-virt's container template
//! without a restart. A user container's stored policy is what root
//! enabled, and is loaded as it is.
//!
//! Guests are found the way `list` and `status` find them (libvirt domains
//! of local URIs, LXC containers of the lxcpaths), plus any
//! `libvirt-<uuid>` profile file whose domain libvirt did not list (the
//! daemon may be down while QEMU runs on).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::apparmor::{
    install_profile, Kernel, KernelStatus, LoadError, LoadWhen, Parser, ParserError, ProfileFile,
    SecurityfsError, SystemKernel,
};
use crate::guest::GuestKind;
use crate::libvirt::naming;
use crate::libvirt::profile::made_by_aa_virt;
use crate::list::{self, ListError};
use crate::lxc::profile::Rerender;
use crate::store::{self, StoreError};

/// Errors of `reload`; each names the guest and the profile file.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The kernel cannot load policy.
    #[error("AppArmor not available: {0}; there is no loaded guest policy to reload")]
    NoKernel(String),
    /// The loaded profiles could not be read.
    #[error(transparent)]
    Securityfs(#[from] SecurityfsError),
    /// Guests could not be listed, or a GUEST matched none or several.
    #[error(transparent)]
    List(#[from] ListError),
    /// The guest's lock could not be taken (or its files not written).
    #[error("guest {guest} ({profile}): not reloaded: {source}")]
    Lock {
        /// Guest name.
        guest: String,
        /// Profile name.
        profile: String,
        /// Why.
        source: StoreError,
    },
    /// The parser rejected the profile; the kernel keeps the previous one.
    #[error("guest {guest}: {} does not load, guest keeps its previous policy; fix {hint} and run `aa-virt reload` again: {source}", path.display())]
    Replace {
        /// Guest name.
        guest: String,
        /// The profile file.
        path: PathBuf,
        /// What to fix (the admin's local file, or the abstractions).
        hint: String,
        /// The parser's complaint.
        source: Box<ParserError>,
    },
    /// A container's profile could not be rendered again; the kernel keeps
    /// its previous policy.
    #[error("container {guest}: not reloaded, its profile does not render: {source}")]
    Render {
        /// Container name.
        guest: String,
        /// Why.
        source: Box<crate::lxc::LxcError>,
    },
}

/// One aa-virt profile that may be reloaded.
#[derive(Debug, Clone)]
pub struct Target {
    /// The guest's name (the profile name when no guest lists it).
    pub guest: String,
    /// `qemu` or `lxc`.
    pub kind: GuestKind,
    /// The profile's name in the kernel.
    pub profile: String,
    /// Its source file.
    pub path: PathBuf,
    /// The kernel has it loaded.
    pub loaded: bool,
    /// A container root loads: its lxcpath, to render its profile again
    /// before the load. `None` for libvirt guests and user containers.
    pub render_from: Option<PathBuf>,
}

/// What happened to one profile.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// Replaced from its file.
    Reloaded,
    /// `--dry-run`: would have been replaced.
    WouldReload,
    /// Not loaded (named on the command line, or unloaded while waiting
    /// for its lock): left alone.
    NotLoaded,
    /// Failed; the kernel keeps the previous policy.
    Failed(ReloadError),
}

/// The result of [`reload`]: every profile considered, in profile order.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Each target with what happened to it.
    pub done: Vec<(Target, ReloadOutcome)>,
    /// Guest sources that could not be listed (the profiles on disk were
    /// still reloaded).
    pub warnings: Vec<String>,
}

impl ReloadReport {
    /// True when any profile failed to reload.
    pub fn failed(&self) -> bool {
        self.done
            .iter()
            .any(|(_, o)| matches!(o, ReloadOutcome::Failed(_)))
    }
}

/// Where to look and how to load.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// Guests, kernel and layouts, as for `list` (its log choice is unused).
    pub list: list::ListOptions,
    /// The parser (the cache directory is set per layout).
    pub parser: Parser,
    /// Report what would be reloaded; load nothing.
    pub dry_run: bool,
}

/// Every aa-virt profile file of a local guest (the managed guests), by
/// profile name, with whether the kernel has it loaded (never, without
/// `loaded`); plus the guest rows for name lookup.
pub fn targets(
    o: &list::ListOptions,
    loaded: Option<&crate::apparmor::securityfs::LoadedProfiles>,
) -> Result<(BTreeMap<String, Target>, list::ListReport), ListError> {
    // The guests only: whether their policy is stale is not asked here
    // (it would cost one include walk per running guest).
    let report = list::list(&list::ListOptions {
        log: list::LogChoice::Off,
        staleness: false,
        ..o.clone()
    })?;
    let mut out = BTreeMap::new();
    // A libvirt guest's profile counts only when aa-virt made it: one that
    // libvirt's own helper wrote is libvirt's (and, its guest stopped,
    // does not compile without its `.files`).
    let mut add = |guest: String, kind, profile: String, path: PathBuf, render_from| {
        let ours = kind != GuestKind::Qemu || made_by_aa_virt(&path);
        if ours && path.is_file() && !out.contains_key(&profile) {
            let is_loaded = loaded.is_some_and(|l| l.mode(None, &profile).is_some());
            out.insert(
                profile.clone(),
                Target {
                    guest,
                    kind,
                    profile,
                    path,
                    loaded: is_loaded,
                    render_from,
                },
            );
        }
    };
    for g in &report.guests {
        if let Some(s) = list::stale::profile_source(o, g, &o.parser) {
            let render_from = g.rendered_by_root().then(|| PathBuf::from(&g.source));
            add(g.name.clone(), g.kind, s.profile, s.path, render_from);
        }
    }
    // Profiles of domains libvirt did not list (daemon down, other URI).
    if let Ok(rd) = std::fs::read_dir(o.layout.libvirt_dir()) {
        for e in rd.filter_map(Result::ok) {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            // Only the name aa-virt writes: `libvirt-` and a lowercase
            // hyphenated UUID (not `.files`, temp files or other spellings).
            let is_profile = naming::parse_profile_name(&name).is_some();
            if is_profile {
                add(
                    name.clone(),
                    GuestKind::Qemu,
                    name.clone(),
                    o.layout.profile_path(&name),
                    None,
                );
            }
        }
    }
    Ok((out, report))
}

/// The profile a GUEST argument names: a profile name, a domain UUID, or a
/// guest name as `status` resolves it.
fn select(
    arg: &str,
    all: &BTreeMap<String, Target>,
    report: &list::ListReport,
) -> Result<Option<String>, ReloadError> {
    if all.contains_key(arg) {
        return Ok(Some(arg.to_string()));
    }
    if let Ok(u) = uuid::Uuid::parse_str(arg) {
        let p = naming::profile_name(&u);
        if all.contains_key(&p) {
            return Ok(Some(p));
        }
    }
    let where_ = report
        .sources
        .iter()
        .map(|s| s.location.as_str())
        .chain(["aa-virt's profile files"])
        .collect::<Vec<_>>()
        .join(", ");
    let row = list::status::pick(report.guests.clone(), arg, &where_)?;
    let found = match (row.kind, &row.profile) {
        (GuestKind::Qemu, Some(p)) => all.get(p),
        (GuestKind::Lxc, _) => all
            .values()
            .find(|t| t.kind == GuestKind::Lxc && t.guest == row.name),
        _ => None,
    };
    // Listed, but without an aa-virt profile file: nothing to reload.
    Ok(found.map(|t| t.profile.clone()))
}

/// Reload the loaded profiles of `guests` (all of aa-virt's when empty).
pub fn reload(opts: &ReloadOptions, guests: &[String]) -> Result<ReloadReport, ReloadError> {
    let root = &opts.list.root;
    let kernel = crate::apparmor::select(SystemKernel::at(root.clone()));
    if let KernelStatus::Unavailable(r) = kernel.status() {
        return Err(ReloadError::NoKernel(r.clone()));
    }
    let loaded = root.profiles()?;
    let (all, listed) = targets(&opts.list, Some(&loaded))?;
    let mut report = ReloadReport {
        warnings: listed.error_lines(),
        ..ReloadReport::default()
    };
    let chosen: Vec<&Target> = if guests.is_empty() {
        all.values().filter(|t| t.loaded).collect()
    } else {
        let mut names = Vec::new();
        for g in guests {
            match select(g, &all, &listed)? {
                Some(p) if !names.contains(&p) => names.push(p),
                Some(_) => {}
                None => report.warnings.push(format!(
                    "guest {g}: no aa-virt profile file for it; nothing to reload"
                )),
            }
        }
        names.sort();
        names.iter().filter_map(|p| all.get(p)).collect()
    };
    let mut render = Rerender::new(opts.list.templates.as_deref(), &opts.parser);
    for t in chosen {
        let outcome = if !t.loaded {
            ReloadOutcome::NotLoaded
        } else if opts.dry_run {
            ReloadOutcome::WouldReload
        } else {
            replace(opts, kernel.as_ref(), t, &mut render)
        };
        report.done.push((t.clone(), outcome));
    }
    Ok(report)
}

/// Container `t`'s profile rendered again, as its next start would store
/// it (`None`: not aa-virt's to render, loaded from its file as it is).
fn render_again(
    t: &Target,
    allow_dir: &Path,
    render: &mut Rerender,
) -> Result<Option<String>, ReloadError> {
    let Some(lxcpath) = &t.render_from else {
        return Ok(None);
    };
    crate::lxc::Container::open(&t.guest, lxcpath)
        .and_then(|ct| render.render(&ct, allow_dir))
        .map_err(|source| ReloadError::Render {
            guest: t.guest.clone(),
            source: Box::new(source),
        })
}

/// Replace one profile under the guest's lock, with the parser and cache
/// the helper and hooks use for that kind of guest.
fn replace(
    opts: &ReloadOptions,
    kernel: &dyn Kernel,
    t: &Target,
    render: &mut Rerender,
) -> ReloadOutcome {
    let o = &opts.list;
    let (lock_dir, parser, hint) = match t.kind {
        GuestKind::Qemu => (
            &o.layout.lock_dir,
            o.layout.parser(&opts.parser),
            format!(
                "the file or what it includes (e.g. {})",
                o.layout
                    .apparmor_dir
                    .join("local")
                    .join(&t.profile)
                    .display()
            ),
        ),
        GuestKind::Lxc => (
            &o.lxc_layout.lock_dir,
            o.lxc_layout.parser(&opts.parser),
            "the abstractions it includes".to_string(),
        ),
    };
    let _lock = match store::lock(lock_dir, &t.profile) {
        Ok(l) => l,
        Err(source) => {
            return ReloadOutcome::Failed(ReloadError::Lock {
                guest: t.guest.clone(),
                profile: t.profile.clone(),
                source,
            })
        }
    };
    let text = match render_again(t, &o.lxc_layout.allow_dir, render) {
        Ok(text) => text,
        Err(e) => return ReloadOutcome::Failed(e),
    };
    let file = text.as_deref().map(|text| ProfileFile {
        path: &t.path,
        content: text.as_bytes(),
        mode: 0o644,
        create_only: false,
    });
    // A hook may have unloaded it (the guest stopped) while we waited.
    // A load that fails puts the previous file back (the transaction).
    let mut txn = crate::store::Txn::new();
    let done = install_profile(
        kernel,
        &parser,
        &mut txn,
        &t.profile,
        &t.path,
        file.as_slice(),
        LoadWhen::IfLoaded,
    );
    match done {
        Ok(d) if d.loaded => {
            txn.commit();
            ReloadOutcome::Reloaded
        }
        Ok(_) => ReloadOutcome::NotLoaded,
        Err(LoadError::Parser(source)) => ReloadOutcome::Failed(ReloadError::Replace {
            guest: t.guest.clone(),
            path: t.path.clone(),
            hint,
            source: Box::new(source),
        }),
        Err(LoadError::Store(source)) => ReloadOutcome::Failed(ReloadError::Lock {
            guest: t.guest.clone(),
            profile: t.profile.clone(),
            source,
        }),
    }
}
