//! A libvirt guest's profile: the admin-editable profile file and the
//! generated `.files`, rendered together and checked with the real parser.

use std::path::{Path, PathBuf};

use crate::apparmor::{
    install_profile, Kernel, KernelStatus, LoadError, LoadWhen, Parser, ParserError, ProfileFile,
};
use crate::guest::Guest;
use crate::policy::files::FilesDoc;
use crate::policy::{self, RuleError, RuleSet, TemplateError, Templates};
use crate::store::{self, StoreError, Txn};

/// Mode of profile files.
const FILE_MODE: u32 = 0o644;

/// Where profile files live (`/etc/apparmor.d` and friends); every path can
/// be moved under a root for tests and `install --root`.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The AppArmor policy directory (`/etc/apparmor.d`).
    pub apparmor_dir: PathBuf,
    /// Per-guest lock files (`/run/aa-virt/lock`).
    pub lock_dir: PathBuf,
    /// Compiled-policy cache (`/var/cache/aa-virt/apparmor`).
    pub cache_dir: PathBuf,
    /// Per-guest state: allowances and mode (`/var/lib/aa-virt/guests`, see
    /// [`policy::allow`]).
    pub allow_dir: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout::under(Path::new("/"))
    }
}

impl Layout {
    /// The standard layout below `root`.
    pub fn under(root: &Path) -> Layout {
        Layout {
            apparmor_dir: root.join("etc/apparmor.d"),
            lock_dir: store::lock_dir_under(root),
            cache_dir: store::cache_dir_under(root),
            allow_dir: policy::allow::dir_under(root),
        }
    }

    /// The guest with its stored allowances (`aa-virt allow`) added as
    /// resources, vetted like every device when its rules are derived.
    pub fn with_allowances(&self, guest: &Guest) -> Result<Guest, ProfileError> {
        Ok(policy::allow::with_allowances(guest, &self.allow_dir)?)
    }

    /// Complain mode for `guest`: its stored mode (`aa-virt mode`), set on
    /// an already installed profile file too, else `configured`.
    pub fn complain_mode(&self, guest: &Guest, configured: bool) -> Result<bool, ProfileError> {
        match super::mode::stored(self, guest)? {
            Some(complain) => {
                if let Some(name) = guest.uuid.as_ref().map(super::naming::profile_name) {
                    super::mode::apply(self, &name, complain)?;
                }
                Ok(complain)
            }
            None => Ok(configured),
        }
    }

    /// `/etc/apparmor.d/libvirt`.
    pub fn libvirt_dir(&self) -> PathBuf {
        self.apparmor_dir.join("libvirt")
    }

    /// `/etc/apparmor.d/libvirt/<profile>`.
    pub fn profile_path(&self, profile: &str) -> PathBuf {
        self.libvirt_dir().join(profile)
    }

    /// `/etc/apparmor.d/libvirt/<profile>.files`.
    pub fn files_path(&self, profile: &str) -> PathBuf {
        self.libvirt_dir().join(super::naming::files_name(profile))
    }

    /// A parser that finds includes in this layout first, then in the
    /// system's `/etc/apparmor.d`, and caches compiled policy here.
    pub fn parser(&self, base: &Parser) -> Parser {
        let mut p = base.clone();
        if self.apparmor_dir != Path::new("/etc/apparmor.d") {
            p.includes.insert(0, self.apparmor_dir.clone());
            p.includes.push(PathBuf::from("/etc/apparmor.d"));
        }
        p.cache = Some(self.cache_dir.clone());
        p
    }

    /// Write aa-virt's abstractions named in `rels` (relative to the policy
    /// directory, as [`Rendered::abstractions`] lists them) where they are
    /// missing (an admin's edited copy is never overwritten).
    pub fn ensure_abstractions(
        &self,
        templates: &Templates,
        rels: &[&str],
    ) -> Result<(), ProfileError> {
        for rel in rels {
            let path = self.apparmor_dir.join(rel);
            // A run killed while creating it leaves a temp file beside it.
            store::sweep_temp(path.parent().unwrap_or(&self.apparmor_dir));
            store::create_once(&path, templates.abstraction(rel)?.as_bytes(), FILE_MODE)?;
        }
        Ok(())
    }
}

/// What [`Rendered::install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// The admin-editable profile file was created by this call.
    pub created_profile: bool,
    /// The generated `.files` changed.
    pub files_changed: bool,
    /// The profile was (re)loaded into the kernel.
    pub loaded: bool,
}

/// What [`uninstall`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The profile was unloaded from the kernel.
    pub unloaded: bool,
    /// The `.files` file was removed.
    pub files_removed: bool,
    /// The profile file was removed.
    pub profile_removed: bool,
}

/// Errors making a libvirt profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The guest has no UUID.
    #[error("guest {0}: no uuid, so no libvirt-<uuid> profile name")]
    NoUuid(String),
    /// A rule could not be made.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// A template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The guest's allowances could not be read or are refused.
    #[error(transparent)]
    Allow(#[from] policy::allow::AllowError),
    /// The guest's stored mode could not be read or applied.
    #[error(transparent)]
    Mode(#[from] super::mode::ModeError),
    /// The parser rejected the result.
    #[error("guest {guest}: the rendered profile does not compile: {source}")]
    Parser {
        /// Guest name.
        guest: String,
        /// The parser's complaint.
        source: ParserError,
    },
    /// Profile files could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kernel cannot load policy and the caller requires it.
    #[error("guest {guest}: cannot load {profile}: {reason}")]
    NoKernel {
        /// Guest name.
        guest: String,
        /// Profile name.
        profile: String,
        /// Why the kernel cannot load policy.
        reason: String,
    },
    /// Unloading through securityfs failed.
    #[error("cannot unload {profile}: {source}")]
    Unload {
        /// Profile name.
        profile: String,
        /// Why.
        source: std::io::Error,
    },
    /// Scratch files for the check could not be written.
    #[error("guest {guest}: cannot prepare the compile check: {source}")]
    Scratch {
        /// Guest name.
        guest: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A rendered libvirt profile.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// `libvirt-<uuid>`.
    pub name: String,
    /// The profile file's text (used only when the file does not exist yet).
    pub profile: String,
    /// The generated `.files` text.
    pub files: String,
    /// The rules, with their origins.
    pub rules: RuleSet,
    /// The `.files` includes the GL abstraction ([`Guest::gl`]).
    pub gl: bool,
}

/// Render a guest's profile and rules.
pub fn render(
    guest: &Guest,
    templates: &Templates,
    complain: bool,
) -> Result<Rendered, ProfileError> {
    let name = guest
        .uuid
        .as_ref()
        .map(super::naming::profile_name)
        .ok_or_else(|| ProfileError::NoUuid(guest.name.clone()))?;
    let rules = policy::derive(guest)?;
    Ok(Rendered {
        profile: templates.libvirt_profile(guest, &name, complain)?,
        files: FilesDoc::render(templates, guest, &name, &rules)?.into_text(),
        name,
        rules,
        gl: guest.gl,
    })
}

impl Rendered {
    /// aa-virt's own abstractions ([`policy::template::ABSTRACTIONS`]) that
    /// the profile or its `.files` includes: `abstractions/aa-virt-qemu`
    /// always, `abstractions/aa-virt-qemu-gl` for a guest that uses GL.
    pub fn abstractions(&self) -> Vec<&'static str> {
        policy::template::libvirt_abstractions(self.gl)
    }

    /// Compile the profile with the real parser without loading it: the
    /// files are laid out in a scratch policy directory, with aa-virt's
    /// abstractions beside them, and the system's `/etc/apparmor.d` for the
    /// rest (`tunables`, `abstractions/base`).
    pub fn check(
        &self,
        guest: &Guest,
        templates: &Templates,
        parser: &Parser,
    ) -> Result<(), ProfileError> {
        check_all(&[(guest, self)], templates, parser)
    }
}

/// Compile several rendered profiles in one parser run, laid out as
/// [`Rendered::check`] does (their names must differ). The error names the
/// guest whose profile the parser rejected.
pub fn check_all(
    items: &[(&Guest, &Rendered)],
    templates: &Templates,
    parser: &Parser,
) -> Result<(), ProfileError> {
    let Some((first, _)) = items.first() else {
        return Ok(());
    };
    let scratch = |source| ProfileError::Scratch {
        guest: first.name.clone(),
        source,
    };
    let dir = store::tempdir().map_err(scratch)?;
    let res = (|| {
        let profs = lay_out(&dir, items, templates)?;
        let mut p = parser.clone();
        p.includes.insert(0, dir.clone());
        p.check_many(&profs).map_err(|mut source| {
            let mut guest = first.name.clone();
            // Name files as they will be installed, not by scratch path.
            if let ParserError::Rejected { file, message, .. } = &mut source {
                let scratch = format!("{}/", dir.display());
                *file = file.replace(&scratch, "");
                *message = message.replace(&scratch, "");
                if let Some((g, _)) = items
                    .iter()
                    .find(|(_, r)| message.contains(&format!("libvirt/{} ", r.name)))
                {
                    guest = g.name.clone();
                }
            }
            ProfileError::Parser { guest, source }
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// Lay rendered profiles out in the policy directory `dir` as they will be
/// installed (`libvirt/<name>` and `libvirt/<name>.files`), with aa-virt's
/// abstractions beside them; the paths of the profile files, in order. The
/// error names the first guest.
pub fn lay_out(
    dir: &Path,
    items: &[(&Guest, &Rendered)],
    templates: &Templates,
) -> Result<Vec<PathBuf>, ProfileError> {
    let scratch = |source| ProfileError::Scratch {
        guest: items
            .first()
            .map(|(g, _)| g.name.clone())
            .unwrap_or_default(),
        source,
    };
    let lv = dir.join("libvirt");
    std::fs::create_dir_all(&lv).map_err(scratch)?;
    for (rel, _) in policy::template::ABSTRACTIONS {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap_or(dir)).map_err(scratch)?;
        std::fs::write(&p, templates.abstraction(rel)?).map_err(scratch)?;
    }
    let mut profs = Vec::with_capacity(items.len());
    for (_, r) in items {
        let prof = lv.join(&r.name);
        std::fs::write(&prof, &r.profile).map_err(scratch)?;
        std::fs::write(lv.join(super::naming::files_name(&r.name)), &r.files).map_err(scratch)?;
        profs.push(prof);
    }
    Ok(profs)
}

impl Rendered {
    /// Write the profile (created once, never overwritten) and its `.files`
    /// (rewritten only when its content changes) under the guest's lock,
    /// then load or replace it in the kernel.
    ///
    /// When the kernel has no AppArmor, nothing is written and
    /// [`ProfileError::NoKernel`] is returned. A failed load restores the
    /// previous files; the kernel keeps the previous policy. A guest whose
    /// files did not change and whose profile is already loaded is not
    /// recompiled.
    pub fn install(
        &self,
        guest: &Guest,
        layout: &Layout,
        templates: &Templates,
        parser: &Parser,
        kernel: &dyn Kernel,
    ) -> Result<Installed, ProfileError> {
        match kernel.status() {
            KernelStatus::Available { .. } => {}
            KernelStatus::Unavailable(reason) => {
                return Err(ProfileError::NoKernel {
                    guest: guest.name.clone(),
                    profile: self.name.clone(),
                    reason: reason.clone(),
                })
            }
        }
        let lock = store::lock(&layout.lock_dir, &self.name)?;
        self.install_locked(guest, layout, templates, parser, kernel, &lock)
    }

    /// [`Rendered::install`] for a caller that already holds the guest's
    /// lock (from [`store::lock`] on `layout.lock_dir` and the profile name)
    /// because it read the current files to decide what to write.
    pub fn install_locked(
        &self,
        guest: &Guest,
        layout: &Layout,
        templates: &Templates,
        parser: &Parser,
        kernel: &dyn Kernel,
        lock: &store::Lock,
    ) -> Result<Installed, ProfileError> {
        store::sweep_temp(&layout.libvirt_dir());
        // Only those this guest includes: a host whose aa-virt profile
        // predates an abstraction still starts every guest that does not
        // need it.
        layout.ensure_abstractions(templates, &self.abstractions())?;
        // Set while files may be newer than what the kernel enforces: a run
        // killed between writing and loading leaves it, and the next run
        // then loads even though the files look unchanged.
        let pending = lock.path().with_extension("pending");
        let interrupted = pending.exists();
        std::fs::File::create(&pending).map_err(|source| StoreError::Io {
            op: "create",
            path: pending.clone(),
            source,
        })?;
        let mut txn = Txn::new();
        let profile_path = layout.profile_path(&self.name);
        let files_path = layout.files_path(&self.name);
        let files = [
            ProfileFile {
                path: &profile_path,
                content: self.profile.as_bytes(),
                mode: FILE_MODE,
                create_only: true,
            },
            ProfileFile {
                path: &files_path,
                content: self.files.as_bytes(),
                mode: FILE_MODE,
                create_only: false,
            },
        ];
        let when = if interrupted {
            LoadWhen::Always
        } else {
            LoadWhen::ChangedOrNotLoaded
        };
        let done = install_profile(
            kernel,
            &layout.parser(parser),
            &mut txn,
            &self.name,
            &profile_path,
            &files,
            when,
        )
        .map_err(|e| match e {
            LoadError::Store(e) => ProfileError::from(e),
            LoadError::Parser(source) => ProfileError::Parser {
                guest: guest.name.clone(),
                source,
            },
        })?;
        txn.commit();
        store::remove(&pending)?;
        Ok(Installed {
            created_profile: done.written[0],
            files_changed: done.written[1],
            loaded: done.loaded,
        })
    }
}

/// Unload a guest's profile (when the kernel has it) and remove its
/// generated `.files`; the admin-editable profile file is removed only when
/// `remove_profile` is set (libvirt keeps it).
pub fn uninstall(
    layout: &Layout,
    name: &str,
    kernel: &dyn Kernel,
    remove_profile: bool,
) -> Result<Removed, ProfileError> {
    let _lock = store::lock(&layout.lock_dir, name)?;
    let unloaded = unload_locked(name, kernel)?;
    let files_removed = store::remove(&layout.files_path(name))?;
    let profile_removed = remove_profile && store::remove(&layout.profile_path(name))?;
    Ok(Removed {
        unloaded,
        files_removed,
        profile_removed,
    })
}

/// Unload a guest's profile (when the kernel has it) and leave every file
/// in place; for hosts configured to keep stopped guests' files.
pub fn unload(layout: &Layout, name: &str, kernel: &dyn Kernel) -> Result<bool, ProfileError> {
    let _lock = store::lock(&layout.lock_dir, name)?;
    unload_locked(name, kernel)
}

fn unload_locked(name: &str, kernel: &dyn Kernel) -> Result<bool, ProfileError> {
    kernel
        .remove_profile(name)
        .map_err(|source| ProfileError::Unload {
            profile: name.to_string(),
            source,
        })
}

/// Whether aa-virt's template made the guest profile at `path` (it includes
/// aa-virt's abstraction). A `libvirt-<uuid>` profile that libvirt's own
/// virt-aa-helper wrote is not aa-virt's to load, reload or check: libvirt
/// loads it at each start, and once its guest stopped (its `.files` gone)
/// it does not even compile.
pub fn made_by_aa_virt(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains("<abstractions/aa-virt-qemu>"))
}
