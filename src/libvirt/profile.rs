//! A libvirt guest's profile: the admin-editable profile file and the
//! generated `.files`, rendered together and checked with the real parser.

use std::path::{Path, PathBuf};

use crate::apparmor::{Parser, ParserError};
use crate::guest::Guest;
use crate::policy::{self, RuleError, RuleSet, TemplateError, Templates};

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
            lock_dir: root.join("run/aa-virt/lock"),
            cache_dir: root.join("var/cache/aa-virt/apparmor"),
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
        self.libvirt_dir().join(format!("{profile}.files"))
    }
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
    /// The parser rejected the result.
    #[error("guest {guest}: the rendered profile does not compile: {source}")]
    Parser {
        /// Guest name.
        guest: String,
        /// The parser's complaint.
        source: ParserError,
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
}

/// Render a guest's profile and rules.
pub fn render(
    guest: &Guest,
    templates: &Templates,
    complain: bool,
) -> Result<Rendered, ProfileError> {
    let name = guest
        .profile_name()
        .ok_or_else(|| ProfileError::NoUuid(guest.name.clone()))?;
    let rules = policy::derive(guest)?;
    Ok(Rendered {
        profile: templates.libvirt_profile(guest, &name, complain)?,
        files: templates.libvirt_files(guest, &name, &rules)?,
        name,
        rules,
    })
}

impl Rendered {
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
        let scratch = |source| ProfileError::Scratch {
            guest: guest.name.clone(),
            source,
        };
        let dir = tempdir().map_err(scratch)?;
        let res = (|| {
            let lv = dir.join("libvirt");
            std::fs::create_dir_all(&lv).map_err(scratch)?;
            for (rel, _) in policy::template::ABSTRACTIONS {
                let p = dir.join(rel);
                std::fs::create_dir_all(p.parent().unwrap_or(&dir)).map_err(scratch)?;
                std::fs::write(&p, templates.abstraction(rel)?).map_err(scratch)?;
            }
            let prof = lv.join(&self.name);
            std::fs::write(&prof, &self.profile).map_err(scratch)?;
            std::fs::write(lv.join(format!("{}.files", self.name)), &self.files)
                .map_err(scratch)?;
            let mut p = parser.clone();
            p.includes.insert(0, dir.clone());
            p.check(&prof).map_err(|mut source| {
                // Name files as they will be installed, not by scratch path.
                if let ParserError::Rejected { file, message, .. } = &mut source {
                    let scratch = format!("{}/", dir.display());
                    *file = file.replace(&scratch, "");
                    *message = message.replace(&scratch, "");
                }
                ProfileError::Parser {
                    guest: guest.name.clone(),
                    source,
                }
            })
        })();
        let _ = std::fs::remove_dir_all(&dir);
        res
    }
}

/// A private scratch directory (mode 0700) under `$TMPDIR`.
pub fn tempdir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let p = base.join(format!(
            "aa-virt.{}.{}.{}",
            std::process::id(),
            i,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free scratch directory name",
    ))
}
