//! A drop-in for libvirt's `virt-aa-helper`: the same command line, the same
//! files, aa-virt's rules.
//!
//! libvirt's AppArmor driver runs the helper with the domain XML on stdin:
//! `-c -u libvirt-<uuid>` (or `-r` when the profile exists) at start,
//! `-r -u … -F FILE` once per file on hotplug, snapshots, block jobs and
//! restore, `-r` on unplug, and `-D` at stop. This module implements that
//! command line on top of the profile engine ([`super::profile`]); it is
//! reached as `aa-virt helper …` or by running aa-virt under the name
//! `virt-aa-helper`.
//!
//! Differences from the reference, on purpose:
//! - paths and guest names are escaped, so names with `[ ] { } * , ^ ? "`
//!   work (set `AA_VIRT_HELPER_STRICT_NAMES=1` to refuse them as the
//!   reference does);
//! - backing layers get `rk` and no `deny … w`, so a later `-F LAYER`
//!   (blockcommit, backup) really grants write access;
//! - `-F` reads the generated `.files` back instead of re-reading every disk
//!   chain, and a file that is already granted causes no recompile and no
//!   reload at all;
//! - `-F DIR/{,**}` (how libvirt labels hugepage and memory-backing
//!   directories) grants the directory tree; any other glob character in a
//!   file name is taken literally.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::helper_args::{parse_args, usage, Args, Extra, HelperMode, UsageError};
use super::profile::{self, Installed, Layout, ProfileError, Removed, Rendered};
use super::{DomainError, ReadOptions};
use crate::apparmor::{
    install_profile, select, Kernel, KernelStatus, LoadError, LoadWhen, Parser, ParserError, Root,
    SystemKernel,
};
use crate::config::{Config, ConfigError};
use crate::guest::{Access, Guest, Resource};
use crate::policy::escape::display_path;
use crate::policy::files::FilesDoc;
use crate::policy::template::GL_ABSTRACTION;
use crate::policy::{rules, RuleError, RuleSet, TemplateError, Templates};
use crate::store::{self, StoreError};

/// Where a `-F`/`-f` rule says it comes from.
const EXTRA_ORIGIN: &str = "added by libvirt";

/// Characters the reference refuses in guest names (strict mode only).
const STRICT_NAME_CHARS: &str = "/[]{}?^,\"*";

/// Helper errors. All of them exit with status 1, as the reference does.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// A bad command line.
    #[error("{0} (see -h)")]
    Usage(#[from] UsageError),
    /// No `-u` where one is needed.
    #[error("-u libvirt-<uuid> is required with -a, -c, -r, -R and -D")]
    MissingUuid,
    /// `-u` is not `libvirt-<uuid>`.
    #[error(
        "invalid profile name {0:?}: expected libvirt-<uuid> with a lower-case hyphenated uuid"
    )]
    BadUuid(String),
    /// `-u` names a different guest than the XML.
    #[error("guest {guest}: -u {arg} does not match the domain's uuid {xml}")]
    UuidMismatch {
        /// Guest name.
        guest: String,
        /// The `-u` argument.
        arg: String,
        /// The uuid in the XML.
        xml: Uuid,
    },
    /// `-c` on a profile that exists.
    #[error("profile {0} already exists; libvirt uses -r to update it")]
    ProfileExists(PathBuf),
    /// `-a`, `-R` or `-D` on a profile that does not exist.
    #[error("profile {0} does not exist")]
    NoProfile(PathBuf),
    /// The domain XML could not be read from stdin.
    #[error("cannot read the domain XML from standard input: {0}")]
    Input(String),
    /// The domain XML is not usable.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The domain XML is not a valid libvirt domain.
    #[error("guest {guest}: {what}; libvirt would not accept this domain")]
    Invalid {
        /// Guest name.
        guest: String,
        /// What is wrong.
        what: String,
    },
    /// Strict names: the name has a character the reference refuses.
    #[error("guest name {0:?} contains {1:?}, refused because AA_VIRT_HELPER_STRICT_NAMES is set")]
    StrictName(String, char),
    /// A rule could not be made (restricted path, bad path...).
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// Rendering, writing or loading the profile failed.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// A template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Loading an existing profile (`-a`) failed.
    #[error("cannot load {profile}: {source}")]
    Load {
        /// Profile name.
        profile: String,
        /// The parser's complaint.
        source: ParserError,
    },
    /// The configuration file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Writing the dry-run report failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Everything the helper runs against; [`Context::from_env`] gives the real
/// system, tests point it at a temporary root and a stand-in kernel.
pub struct Context {
    /// Profile file locations.
    pub layout: Layout,
    /// The parser.
    pub parser: Parser,
    /// The kernel.
    pub kernel: Box<dyn Kernel + Send + Sync>,
    /// The templates.
    pub templates: Templates,
    /// Refuse guest names the reference refuses.
    pub strict_names: bool,
    /// Where the host's `/sys` is read to find host devices (`/`).
    pub sysfs_root: PathBuf,
    /// The configuration (complain list).
    pub config: Config,
}

impl Context {
    /// The system, configured by `/etc/aa-virt/aa-virt.toml` (or
    /// `$AA_VIRT_CONFIG`) like the hook: its parser, cache, templates,
    /// extra abstractions and complain list. For tests, `$AA_VIRT_ROOT`
    /// moves the profile files under a root and `$AA_VIRT_SYSROOT` the
    /// kernel's `/sys`; `$AA_VIRT_HELPER_STRICT_NAMES=1` refuses the guest
    /// names the reference refuses.
    pub fn from_env() -> Result<Context, HelperError> {
        let path = Config::default_path();
        let config = Config::load(&path)?;
        let nonempty = |v: &str| {
            std::env::var_os(v)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        let layout = match nonempty("AA_VIRT_ROOT") {
            Some(r) => Layout::under(&r),
            None => Layout {
                cache_dir: config.cache_dir.clone(),
                ..Layout::default()
            },
        };
        let sysroot = nonempty(crate::apparmor::SYSROOT_ENV);
        let status = match &sysroot {
            Some(r) => crate::apparmor::securityfs::status_at(r),
            None => config.kernel_status(),
        };
        let root = sysroot.as_deref().map_or_else(Root::system, Root::new);
        let kernel = select(SystemKernel::with_status(status, root));
        let dir = config
            .templates
            .clone()
            .or_else(|| nonempty("AA_VIRT_TEMPLATES"));
        Ok(Context {
            layout,
            parser: config.parser(),
            kernel,
            templates: Templates::load(dir.as_deref())?.with_includes(config.abstractions.clone()),
            strict_names: std::env::var("AA_VIRT_HELPER_STRICT_NAMES").as_deref() == Ok("1"),
            sysfs_root: sysroot.unwrap_or_else(|| PathBuf::from("/")),
            config,
        })
    }

    /// Is this guest listed for complain mode in the configuration?
    fn complain(&self, g: &Guest) -> bool {
        self.config.complain_for(&g.name, g.uuid.as_ref())
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperOutcome {
    /// Printed the help.
    Help,
    /// Dry run: printed what would be done.
    DryRun,
    /// Wrote and (when needed) loaded the profile.
    Installed(Installed),
    /// `-F`: the file was already granted and the profile loaded; nothing
    /// was written, compiled or loaded.
    AlreadyGranted,
    /// `-a`: loaded the existing profile.
    Loaded,
    /// `-R`/`-D`.
    Removed(Removed),
}

/// The profile name from `-u`: `libvirt-` and a lower-case hyphenated uuid.
pub fn profile_uuid(arg: &str) -> Result<Uuid, HelperError> {
    super::naming::parse_profile_name(arg).ok_or_else(|| HelperError::BadUuid(arg.to_string()))
}

/// Run the helper. `xml` is called once, only by the modes that read the
/// domain (`-c`, `-r`); the dry-run report goes to `out`.
pub fn run(
    ctx: &Context,
    args: &Args,
    xml: &mut dyn FnMut() -> Result<String, HelperError>,
    out: &mut dyn Write,
) -> Result<HelperOutcome, HelperError> {
    if args.help {
        return Ok(HelperOutcome::Help);
    }
    let mode = args.mode.ok_or_else(|| {
        HelperError::Usage(UsageError("no mode given (one of -a -c -r -R -D)".into()))
    })?;
    let arg = args.uuid.as_deref().ok_or(HelperError::MissingUuid)?;
    let uuid = profile_uuid(arg)?;
    let name = super::naming::profile_name(&uuid);
    let layout = &ctx.layout;
    let profile_path = layout.profile_path(&name);
    let exists = std::fs::metadata(&profile_path)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    if args.extra.is_some() && mode != HelperMode::Replace {
        return Err(HelperError::Usage(UsageError(
            "-f and -F go with -r".into(),
        )));
    }
    match mode {
        HelperMode::Add | HelperMode::Remove | HelperMode::Delete => {
            if !exists {
                return Err(HelperError::NoProfile(profile_path));
            }
            if args.dryrun {
                let what = match mode {
                    HelperMode::Add => "load",
                    HelperMode::Remove => "unload",
                    _ => "unload, and delete the generated rules of",
                };
                writeln!(
                    out,
                    "dry run: would {what} {name} ({})",
                    profile_path.display()
                )?;
                return Ok(HelperOutcome::DryRun);
            }
            match mode {
                HelperMode::Add => load(ctx, &name, &profile_path),
                HelperMode::Remove => unload(ctx, &name),
                _ => Ok(HelperOutcome::Removed(profile::uninstall(
                    layout,
                    &name,
                    ctx.kernel.as_ref(),
                    false,
                )?)),
            }
        }
        HelperMode::Create | HelperMode::Replace => {
            if mode == HelperMode::Create && exists {
                return Err(HelperError::ProfileExists(profile_path));
            }
            let text = xml()?;
            let append = matches!(args.extra, Some(Extra::Append(_)));
            // -F never needs the disks' backing chains: the existing rules
            // already have them, and a fallback render reads them from the XML.
            let guest = super::parse(
                &text,
                &ReadOptions {
                    probe_chains: !append,
                    sysfs_root: ctx.sysfs_root.clone(),
                },
            )?;
            check_guest(ctx, &guest, &text, uuid, arg)?;
            match &args.extra {
                Some(Extra::Append(f)) => {
                    append_file(ctx, guest, &text, &name, f, args.dryrun, out)
                }
                other => {
                    let mut guest = guest;
                    if let Some(Extra::Add(f)) = other {
                        guest.add(extra_resource(f));
                    }
                    regenerate(ctx, &guest, &name, mode, args.dryrun, out)
                }
            }
        }
    }
}

/// The checks libvirt's own parser and the reference make on the domain.
fn check_guest(
    ctx: &Context,
    guest: &Guest,
    xml: &str,
    uuid: Uuid,
    arg: &str,
) -> Result<(), HelperError> {
    if guest.uuid != Some(uuid) {
        return Err(HelperError::UuidMismatch {
            guest: guest.name.clone(),
            arg: arg.to_string(),
            xml: guest.uuid.unwrap_or_default(),
        });
    }
    if ctx.strict_names {
        if let Some(c) = guest.name.chars().find(|c| STRICT_NAME_CHARS.contains(*c)) {
            return Err(HelperError::StrictName(guest.name.clone(), c));
        }
    }
    // libvirt refuses a domain without a known OS type; so does its helper.
    let invalid = |what: String| HelperError::Invalid {
        guest: guest.name.clone(),
        what,
    };
    let doc = roxmltree::Document::parse(xml).map_err(DomainError::from)?;
    let os_type = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("os"))
        .and_then(|os| os.children().find(|n| n.has_tag_name("type")))
        .and_then(|t| t.text())
        .map(str::trim);
    match os_type {
        Some("hvm" | "xen" | "linux" | "exe" | "xenpvh") => Ok(()),
        Some(t) => Err(invalid(format!("unknown <os><type> {t:?}"))),
        None => Err(invalid("no <os><type>".into())),
    }
}

/// The resource for a `-f`/`-F` file: always `rwk`, as libvirt expects;
/// `DIR/{,**}` and `DIR/**` mean the directory tree.
pub fn extra_resource(f: &Path) -> Resource {
    let b = f.as_os_str().as_bytes();
    for suffix in [&b"/{,**}"[..], b"/**"] {
        if let Some(dir) = b.strip_suffix(suffix).filter(|d| !d.is_empty()) {
            return Resource::tree(
                crate::guest::path_from_bytes(dir.to_vec()),
                Access::RWK,
                EXTRA_ORIGIN,
            );
        }
    }
    Resource::file(f, Access::RWK, EXTRA_ORIGIN)
}

/// `-c`, `-r`, `-r -f`: render everything from the XML and install it.
fn regenerate(
    ctx: &Context,
    guest: &Guest,
    name: &str,
    mode: HelperMode,
    dryrun: bool,
    out: &mut dyn Write,
) -> Result<HelperOutcome, HelperError> {
    let guest = &ctx.layout.with_allowances(guest)?;
    // A dry run writes nothing, not even the stored mode's flag.
    let complain = match dryrun {
        true => super::mode::stored(&ctx.layout, guest)
            .map_err(profile::ProfileError::from)?
            .unwrap_or(ctx.complain(guest)),
        false => ctx.layout.complain_mode(guest, ctx.complain(guest))?,
    };
    let r = profile::render(guest, &ctx.templates, complain)?;
    for s in &guest.skipped {
        tracing::info!("guest {}: {}: no rule: {}", guest.name, s.origin, s.reason);
    }
    if dryrun {
        let path = ctx.layout.profile_path(name);
        if mode == HelperMode::Create {
            writeln!(
                out,
                "dry run: would create profile {name} ({})",
                path.display()
            )?;
        }
        writeln!(
            out,
            "dry run: rules for {}:",
            ctx.layout.files_path(name).display()
        )?;
        for rule in r.rules.rules() {
            writeln!(out, "{}", rule.render())?;
        }
        return Ok(HelperOutcome::DryRun);
    }
    Ok(HelperOutcome::Installed(r.install(
        guest,
        &ctx.layout,
        &ctx.templates,
        &ctx.parser,
        ctx.kernel.as_ref(),
    )?))
}

/// `-r -F FILE`: add one file to the current rules, without re-reading the
/// guest's disks. A file already granted with at least `rwk` changes
/// nothing; otherwise its line is widened or appended and the profile is
/// reloaded once.
fn append_file(
    ctx: &Context,
    guest: Guest,
    xml: &str,
    name: &str,
    f: &Path,
    dryrun: bool,
    out: &mut dyn Write,
) -> Result<HelperOutcome, HelperError> {
    let res = extra_resource(f);
    rules::check_name(&guest.name)?;
    let resolved = rules::vet(&guest.name, &res)?;
    let mut want = RuleSet::default();
    rules::push_resource(&mut want, &resolved, &res);
    if dryrun {
        writeln!(
            out,
            "dry run: would add to {}:",
            ctx.layout.files_path(name).display()
        )?;
        for rule in want.rules() {
            writeln!(out, "{}", rule.render())?;
        }
        return Ok(HelperOutcome::DryRun);
    }
    if let KernelStatus::Unavailable(reason) = ctx.kernel.status() {
        return Err(ProfileError::NoKernel {
            guest: guest.name.clone(),
            profile: name.to_string(),
            reason: reason.clone(),
        }
        .into());
    }
    let layout = &ctx.layout;
    let lock = store::lock(&layout.lock_dir, name)?;
    let files_path = layout.files_path(name);
    let current = match std::fs::read_to_string(&files_path) {
        Ok(t) => {
            let doc = FilesDoc::parse(&t);
            if doc.is_none() {
                tracing::warn!(
                    "{} was not written by aa-virt; regenerating it from the domain XML",
                    display_path(&files_path)
                );
            }
            doc
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(StoreError::Io {
                op: "read",
                path: files_path,
                source,
            }
            .into())
        }
    };
    let Some(mut doc) = current else {
        // No rules of ours yet: a full render from the XML (with the disks'
        // backing chains, which -F skipped), plus the file.
        drop(lock);
        let mut g = super::parse(
            xml,
            &ReadOptions {
                probe_chains: true,
                sysfs_root: ctx.sysfs_root.clone(),
            },
        )?;
        g.add(res);
        return regenerate(ctx, &g, name, HelperMode::Replace, false, out);
    };
    // Widen in place or append: one rule per path, and no deny rule
    // anywhere that could outweigh it.
    let changed = doc.merge(&want, EXTRA_ORIGIN);
    let loaded = ctx.kernel.profile_mode(name).ok().flatten().is_some();
    if !changed && loaded {
        return Ok(HelperOutcome::AlreadyGranted);
    }
    let gl = doc.includes().contains(&GL_ABSTRACTION);
    let files = doc.into_text();
    let r = Rendered {
        name: name.to_string(),
        profile: ctx
            .templates
            .libvirt_profile(&guest, name, ctx.complain(&guest))?,
        files,
        rules: RuleSet::default(),
        gl,
    };
    Ok(HelperOutcome::Installed(r.install_locked(
        &guest,
        layout,
        &ctx.templates,
        &ctx.parser,
        ctx.kernel.as_ref(),
        &lock,
    )?))
}

/// `-a`: load the existing profile as it is.
fn load(ctx: &Context, name: &str, path: &Path) -> Result<HelperOutcome, HelperError> {
    if let KernelStatus::Unavailable(reason) = ctx.kernel.status() {
        return Err(HelperError::Load {
            profile: name.to_string(),
            source: ParserError::Rejected {
                action: "load",
                file: path.display().to_string(),
                line: None,
                message: reason.clone(),
            },
        });
    }
    let _lock = store::lock(&ctx.layout.lock_dir, name)?;
    let mut txn = store::Txn::new();
    install_profile(
        ctx.kernel.as_ref(),
        &ctx.layout.parser(&ctx.parser),
        &mut txn,
        name,
        path,
        &[],
        LoadWhen::Always,
    )
    .map_err(|e| match e {
        LoadError::Store(e) => HelperError::from(e),
        LoadError::Parser(source) => HelperError::Load {
            profile: name.to_string(),
            source,
        },
    })?;
    txn.commit();
    Ok(HelperOutcome::Loaded)
}

/// `-R`: unload, keeping every file.
fn unload(ctx: &Context, name: &str) -> Result<HelperOutcome, HelperError> {
    let _lock = store::lock(&ctx.layout.lock_dir, name)?;
    let unloaded = ctx
        .kernel
        .remove_profile(name)
        .map_err(|source| ProfileError::Unload {
            profile: name.to_string(),
            source,
        })?;
    Ok(HelperOutcome::Removed(Removed {
        unloaded,
        files_removed: false,
        profile_removed: false,
    }))
}

/// The helper's command line: `args` without the program name; `prog` is
/// the name to show in messages. Returns the exit status.
pub fn main(prog: &str, args: Vec<OsString>) -> i32 {
    let res = parse_args(args).map_err(HelperError::from).and_then(|a| {
        if a.help {
            print!("{}", usage(prog));
            return Ok(HelperOutcome::Help);
        }
        let ctx = Context::from_env()?;
        let mut xml = || super::read_input("-").map_err(|e| HelperError::Input(e.to_string()));
        run(&ctx, &a, &mut xml, &mut std::io::stderr())
    });
    match res {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{prog}: error: {e}");
            1
        }
    }
}
