//! The libvirt qemu hook: `aa-virt hook qemu GUEST OP SUBOP EXTRA`, with the
//! domain XML on stdin.
//!
//! libvirt runs every script in `/etc/libvirt/hooks/qemu.d/` for each guest
//! event. A non-zero exit aborts `prepare`, `start`, `migrate`, `restore`
//! and `reconnect`; `migrate` and `restore` are filters whose stdout
//! replaces the XML; hooks must not call back into libvirt. aa-virt:
//!
//! - `prepare`, `start`, `started`, `reconnect`, `attach`: make sure the
//!   guest's profile is written and loaded (render, write atomically, load
//!   only when something changed or the kernel lacks it). `prepare` is where
//!   it is created; the later ones verify and repair, and cost nothing when
//!   all is in place.
//! - `migrate`, `restore`: the same on this host, then echo the XML back
//!   unchanged.
//! - `stopped`, `release`: unload the profile and remove the generated
//!   `.files` (kept when `keep_files` is set); the admin-editable profile
//!   file stays, as with libvirt.
//! - anything else: ignored with exit 0, for forward compatibility.
//!
//! Every operation is idempotent and runs under the guest's lock (taken by
//! [`crate::libvirt::profile`]), so two hooks for one guest cannot race.

use crate::apparmor::{select, Kernel, Parser, Root, SystemKernel};
use crate::config::{Config, FailMode};
use crate::guest::Guest;
use crate::libvirt::profile::{self, Layout, ProfileError};
use crate::libvirt::{parse, DomainError, ReadOptions};
use crate::policy::{TemplateError, Templates};

/// A hook operation (libvirt's second argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Before any resources are allocated for a starting guest.
    Prepare,
    /// Just before QEMU is executed.
    Start,
    /// QEMU is running.
    Started,
    /// QEMU has exited.
    Stopped,
    /// All resources of a stopped guest are released.
    Release,
    /// Incoming migration (a filter).
    Migrate,
    /// Restore from a saved image (a filter).
    Restore,
    /// The daemon restarted and reconnects to a running guest.
    Reconnect,
    /// The daemon attaches to a QEMU started outside libvirt.
    Attach,
    /// An operation this version does not know.
    Unknown(String),
}

impl Op {
    /// Parse libvirt's operation name.
    pub fn parse(s: &str) -> Op {
        match s {
            "prepare" => Op::Prepare,
            "start" => Op::Start,
            "started" => Op::Started,
            "stopped" => Op::Stopped,
            "release" => Op::Release,
            "migrate" => Op::Migrate,
            "restore" => Op::Restore,
            "reconnect" => Op::Reconnect,
            "attach" => Op::Attach,
            other => Op::Unknown(other.to_string()),
        }
    }

    /// libvirt's name for it.
    pub fn name(&self) -> &str {
        match self {
            Op::Prepare => "prepare",
            Op::Start => "start",
            Op::Started => "started",
            Op::Stopped => "stopped",
            Op::Release => "release",
            Op::Migrate => "migrate",
            Op::Restore => "restore",
            Op::Reconnect => "reconnect",
            Op::Attach => "attach",
            Op::Unknown(s) => s,
        }
    }

    /// Operations whose stdout replaces the domain XML.
    pub fn is_filter(&self) -> bool {
        matches!(self, Op::Migrate | Op::Restore)
    }
}

/// Hook errors. Each is one line, naming the guest and the operation; it
/// lands in libvirt's error for the failed start.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The hook was called for another libvirt driver.
    #[error("aa-virt handles the 'qemu' hook only, not {0:?}")]
    Object(String),
    /// The domain XML on stdin is unusable.
    #[error("{op} hook for guest {guest}: {source}")]
    Domain {
        /// The operation.
        op: String,
        /// The guest name libvirt passed.
        guest: String,
        /// Why.
        source: DomainError,
    },
    /// The XML describes another guest than the one libvirt named.
    #[error("{op} hook for guest {arg}: the domain XML on stdin is for guest {xml}")]
    NameMismatch {
        /// The operation.
        op: String,
        /// The name on the command line.
        arg: String,
        /// The name in the XML.
        xml: String,
    },
    /// The guest's profile could not be made or loaded.
    #[error("{op} hook: {source}")]
    Profile {
        /// The operation.
        op: String,
        /// Why.
        source: Box<ProfileError>,
    },
    /// The kernel cannot enforce a profile and the configuration requires
    /// confinement.
    #[error("{op} hook: guest {guest} would run unconfined: {reason}; refusing to start it (set fail = \"open\" in {config} to allow unconfined guests)")]
    Unconfined {
        /// The operation.
        op: String,
        /// Guest name.
        guest: String,
        /// Why.
        reason: String,
        /// The configuration file.
        config: String,
    },
    /// The templates could not be loaded.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// What a hook run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HookOutcome {
    /// Text for stdout (the XML, for filters).
    pub stdout: Option<String>,
    /// One-line notes for the daemon's log (stderr).
    pub notes: Vec<String>,
    /// One-line warnings for the daemon's log (stderr); a guest that runs
    /// unconfined is always one of these.
    pub warnings: Vec<String>,
}

/// Everything a hook run needs; built once per process.
pub struct Hook {
    /// The configuration.
    pub config: Config,
    /// Where the configuration came from (for messages).
    pub config_path: String,
    /// Where profiles live.
    pub layout: Layout,
    /// Profile templates (with the configured extra includes).
    pub templates: Templates,
    /// The parser.
    pub parser: Parser,
    /// The kernel (its status probed at start).
    pub kernel: Box<dyn Kernel + Send + Sync>,
    /// Domain reading options.
    pub read: ReadOptions,
}

impl Hook {
    /// A hook for the real host, set up from `config`.
    pub fn new(config: Config, config_path: &std::path::Path) -> Result<Hook, HookError> {
        let layout = Layout {
            cache_dir: config.cache_dir.clone(),
            ..Layout::default()
        };
        let templates = Templates::load(config.templates.as_deref())?
            .with_includes(config.abstractions.clone());
        Ok(Hook {
            parser: config.parser(),
            kernel: select(SystemKernel::with_status(
                config.kernel_status(),
                Root::system(),
            )),
            config_path: config_path.display().to_string(),
            config,
            layout,
            templates,
            read: ReadOptions {
                probe_chains: true,
                ..ReadOptions::default()
            },
        })
    }

    /// Handle one hook call. `args` are libvirt's arguments after the
    /// object (`GUEST OP SUBOP EXTRA`); `xml` is stdin.
    pub fn run(&self, object: &str, args: &[String], xml: &str) -> Result<HookOutcome, HookError> {
        if object != "qemu" {
            return Err(HookError::Object(object.to_string()));
        }
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
        let (guest_arg, op) = (arg(0), Op::parse(arg(1)));
        let mut out = HookOutcome::default();
        if let Op::Unknown(name) = &op {
            out.notes.push(format!(
                "ignoring unknown hook operation {name:?} for guest {guest_arg}"
            ));
            return Ok(out);
        }
        let guest = parse(xml, &self.read).map_err(|source| HookError::Domain {
            op: op.name().into(),
            guest: guest_arg.into(),
            source,
        })?;
        if guest.name != guest_arg {
            return Err(HookError::NameMismatch {
                op: op.name().into(),
                arg: guest_arg.into(),
                xml: guest.name.clone(),
            });
        }
        match op {
            Op::Stopped | Op::Release => self.release(&op, &guest, &mut out)?,
            _ => self.ensure(&op, &guest, &mut out)?,
        }
        if op.is_filter() {
            out.stdout = Some(xml.to_string());
        }
        Ok(out)
    }

    /// Render, write and load (or verify) the guest's profile.
    fn ensure(&self, op: &Op, guest: &Guest, out: &mut HookOutcome) -> Result<(), HookError> {
        let perr = |source| HookError::Profile {
            op: op.name().into(),
            source: Box::new(source),
        };
        let configured = self.config.complain_for(&guest.name, guest.uuid.as_ref());
        let complain = self.layout.complain_mode(guest, configured).map_err(perr)?;
        // A guest aa-virt refuses (a restricted path, an unusable name) never
        // starts, whatever `fail` says: that is a policy decision, not a
        // host failure.
        let guest = &self.layout.with_allowances(guest).map_err(perr)?;
        let r = profile::render(guest, &self.templates, complain).map_err(perr)?;
        if let Err(e) = std::fs::create_dir_all(&self.layout.cache_dir) {
            tracing::debug!("cannot create {}: {e}", self.layout.cache_dir.display());
        }
        match r.install(
            guest,
            &self.layout,
            &self.templates,
            &self.parser,
            self.kernel.as_ref(),
        ) {
            Ok(i) => {
                let what = match (i.created_profile, i.files_changed, i.loaded) {
                    (true, _, _) => "created and loaded",
                    (false, true, _) => "updated and reloaded",
                    (false, false, true) => "loaded",
                    (false, false, false) => "verified (already loaded, unchanged)",
                };
                out.notes.push(format!(
                    "{} hook: guest {}: profile {} {what}{}",
                    op.name(),
                    guest.name,
                    r.name,
                    if complain { " (complain mode)" } else { "" }
                ));
                Ok(())
            }
            Err(e) => {
                let reason = match &e {
                    ProfileError::NoKernel { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                match self.config.fail {
                    FailMode::Open => {
                        out.warnings.push(format!(
                            "{} hook: guest {} ({}) runs UNCONFINED: {reason} (fail = \"open\" in {})",
                            op.name(),
                            guest.name,
                            r.name,
                            self.config_path
                        ));
                        Ok(())
                    }
                    FailMode::Closed => match e {
                        ProfileError::NoKernel { .. } => Err(HookError::Unconfined {
                            op: op.name().into(),
                            guest: guest.name.clone(),
                            reason,
                            config: self.config_path.clone(),
                        }),
                        other => Err(perr(other)),
                    },
                }
            }
        }
    }

    /// Unload the profile and remove (or keep) the generated rules.
    fn release(&self, op: &Op, guest: &Guest, out: &mut HookOutcome) -> Result<(), HookError> {
        let perr = |source| HookError::Profile {
            op: op.name().into(),
            source: Box::new(source),
        };
        let name = guest
            .uuid
            .as_ref()
            .map(super::naming::profile_name)
            .ok_or_else(|| perr(ProfileError::NoUuid(guest.name.clone())))?;
        let (unloaded, removed) = if self.config.keep_files {
            (
                profile::unload(&self.layout, &name, self.kernel.as_ref()).map_err(perr)?,
                false,
            )
        } else {
            let r = profile::uninstall(&self.layout, &name, self.kernel.as_ref(), false)
                .map_err(perr)?;
            (r.unloaded, r.files_removed)
        };
        out.notes.push(format!(
            "{} hook: guest {}: profile {} {}, rules file {}",
            op.name(),
            guest.name,
            name,
            if unloaded {
                "unloaded"
            } else {
                "was not loaded"
            },
            if removed {
                "removed"
            } else if self.config.keep_files {
                "kept (keep_files)"
            } else {
                "already gone"
            }
        ));
        Ok(())
    }
}
