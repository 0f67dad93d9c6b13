//! The one boundary between aa-virt and the kernel's AppArmor: the
//! [`Kernel`] trait (is a profile loaded and in which mode, load or replace,
//! unload, make and remove a policy namespace, read a task's label, close
//! the user-namespace policy switch), its
//! system implementation [`SystemKernel`] (`apparmor::select` picks the
//! kernel to use).
//! Tests get a recording fake (`apparmor::fake`, only with the `test-util`
//! feature, never in a release build). Builds on [`super::securityfs`],
//! never the other way round.

use std::path::{Path, PathBuf};

use super::label::{process_label, Label, LabelError};
use super::parser::{Parser, ParserError};
use super::securityfs::{profile_dir_in, split_mode, KernelStatus, Root, SecurityfsError};
use super::userns_policy::{self, UsernsPolicyError};

/// What aa-virt asks of the kernel. Every load, unload and namespace change
/// goes through here, so tests can stand in for the kernel.
pub trait Kernel: std::fmt::Debug {
    /// Can policy be loaded at all, and if not, why.
    fn status(&self) -> &KernelStatus;
    /// The mode (`enforce`, `complain`, ...) of loaded profile `name` in the
    /// caller's namespace, or `None` when it is not loaded (or AppArmor is
    /// not there).
    fn profile_mode(&self, name: &str) -> std::io::Result<Option<String>>;
    /// Load or replace profile `name`, compiled by `parser` from the file
    /// `profile`: what was loaded, and whether it came from the cache.
    fn replace(&self, parser: &Parser, name: &str, profile: &Path)
        -> Result<Replaced, ParserError>;
    /// Unload profile `name`; `false` when it was not loaded.
    fn remove_profile(&self, name: &str) -> std::io::Result<bool>;
    /// Make policy namespace `ns`; `false` when it was already there.
    fn create_namespace(&self, ns: &str) -> Result<bool, SecurityfsError>;
    /// Remove policy namespace `ns` with every profile in it; `false` when
    /// it was not there.
    fn remove_namespace(&self, ns: &str) -> Result<bool, SecurityfsError>;
    /// The current label of task `pid`.
    fn task_label(&self, pid: u32) -> Result<Label, LabelError>;
    /// The kernel's own hash of the loaded profile `name` (the `sha256`
    /// or `sha1` file of its `policy/profiles` directory), or `None` when
    /// it is not loaded or the kernel keeps no hash
    /// (`CONFIG_SECURITY_APPARMOR_HASH` off). It changes whenever the
    /// profile is replaced with different policy, by anyone.
    fn policy_hash(&self, name: &str) -> Result<Option<String>, SecurityfsError>;
    /// Set [`userns_policy::SYSCTL`] to 0 so that only the host's root
    /// manages policy namespaces, and check that it took: true when this
    /// call closed it, false when it was closed (or absent) already.
    fn close_userns_policy(&self) -> Result<bool, UsernsPolicyError>;
}

/// What [`Kernel::replace`] loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    /// The digest of the inputs the policy was compiled from
    /// ([`Parser::inputs_digest`], computed once per load), `None` when
    /// the parser has no cache or the digest cannot be computed.
    pub inputs: Option<String>,
    /// True when the policy came from the cache (written to the kernel
    /// directly, or read by the parser) rather than compiled now.
    pub from_cache: bool,
}

/// The running kernel (or, for tests, a directory tree laid out like it,
/// see [`Root`]): securityfs for modes, unloads and namespaces,
/// `apparmor_parser` for loads, procfs for labels.
#[derive(Debug, Clone)]
pub struct SystemKernel {
    status: KernelStatus,
    /// securityfs's AppArmor directory, when there is one to read.
    fs: Option<PathBuf>,
    root: Root,
}

impl SystemKernel {
    /// The kernel below `root`: its status is probed there, and securityfs
    /// is `root`'s even when the probe says AppArmor is missing (reads then
    /// simply find nothing).
    pub fn at(root: Root) -> SystemKernel {
        SystemKernel {
            status: root.kernel_status(),
            fs: Some(root.apparmor_dir()),
            root,
        }
    }

    /// A kernel whose status is already known (probed, or given by the
    /// configuration's `securityfs`): securityfs is the directory in
    /// `status`, none when AppArmor is unavailable. Namespaces and labels
    /// are read below `root`.
    pub fn with_status(status: KernelStatus, root: Root) -> SystemKernel {
        let fs = match &status {
            KernelStatus::Available { fs } => Some(fs.clone()),
            KernelStatus::Unavailable(_) => None,
        };
        SystemKernel { status, fs, root }
    }

    /// The securityfs directory this kernel reads and writes, if any.
    pub fn securityfs(&self) -> Option<&Path> {
        self.fs.as_deref()
    }

    /// The root namespaces and task labels are read below.
    pub fn root(&self) -> &Root {
        &self.root
    }
}

impl Kernel for SystemKernel {
    fn status(&self) -> &KernelStatus {
        &self.status
    }

    fn profile_mode(&self, name: &str) -> std::io::Result<Option<String>> {
        match &self.fs {
            Some(fs) => profile_mode(fs, name),
            None => Ok(None),
        }
    }

    /// When the cache holds the policy compiled from exactly these inputs
    /// for this kernel ([`Parser::cached_policy`]), it is written to the
    /// kernel directly, as the parser would on a cache hit, without
    /// starting the parser. Otherwise, or when the kernel refuses it, the
    /// parser compiles afresh and loads (and its new cache entry is
    /// recorded); a kernel without `set_load` is always loaded by the
    /// parser, which may read its cache.
    fn replace(
        &self,
        parser: &Parser,
        name: &str,
        profile: &Path,
    ) -> Result<Replaced, ParserError> {
        let digest = parser.load_digest(profile);
        let mut read_cache = true;
        // Only a kernel that takes a whole policy set in one write
        // (`set_load`) is written to directly, as the parser does.
        let direct = self
            .fs
            .as_deref()
            .filter(|fs| fs.join("features/policy/set_load").exists());
        if let (Some(fs), Some(d)) = (direct, digest.as_deref()) {
            if let Some(policy) = parser.cached_policy(profile, d) {
                match load_policy(fs, &policy) {
                    Ok(()) => {
                        tracing::debug!("{name}: loaded the cached policy, inputs unchanged");
                        return Ok(Replaced {
                            inputs: digest,
                            from_cache: true,
                        });
                    }
                    Err(e) => tracing::debug!(
                        "{name}: the kernel refused the cached policy ({e}); compiling"
                    ),
                }
            }
            // Compile afresh: a refused policy is never loaded again, and
            // the parser's new cache entry gets recorded (a record from an
            // older aa-virt names none), so the next load is direct.
            read_cache = false;
        }
        let from_cache = parser.replace_digested(profile, digest.as_deref(), read_cache)?;
        Ok(Replaced {
            inputs: digest,
            from_cache,
        })
    }

    fn remove_profile(&self, name: &str) -> std::io::Result<bool> {
        match &self.fs {
            Some(fs) => remove_profile(fs, name),
            None => Ok(false),
        }
    }

    fn create_namespace(&self, ns: &str) -> Result<bool, SecurityfsError> {
        self.root.create_namespace(ns)
    }

    fn remove_namespace(&self, ns: &str) -> Result<bool, SecurityfsError> {
        self.root.remove_namespace(ns)
    }

    fn task_label(&self, pid: u32) -> Result<Label, LabelError> {
        process_label(&self.root, pid)
    }

    fn policy_hash(&self, name: &str) -> Result<Option<String>, SecurityfsError> {
        let Some(fs) = &self.fs else {
            return Ok(None);
        };
        let Some(dir) = profile_dir_in(fs, name)? else {
            return Ok(None);
        };
        Ok(["sha256", "sha1"].iter().find_map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).ok()?;
            let h = text.trim();
            (!h.is_empty()).then(|| format!("{f}:{h}"))
        }))
    }

    fn close_userns_policy(&self) -> Result<bool, UsernsPolicyError> {
        userns_policy::close(&self.root)
    }
}

/// The mode (`enforce`, `complain`, ...) of a loaded profile in the caller's
/// namespace, read from the securityfs directory `fs`'s `profiles` (`name (mode)` per line), or `None`
/// when it is not loaded.
fn profile_mode(fs: &Path, name: &str) -> std::io::Result<Option<String>> {
    let text = std::fs::read_to_string(fs.join("profiles"))?;
    Ok(text.lines().find_map(|l| {
        let (n, mode) = split_mode(l)?;
        (n == name).then(|| mode.as_str().to_string())
    }))
}

/// Load or replace compiled policy `policy` through securityfs `.replace`
/// in one write, as `apparmor_parser` writes a cached policy to a kernel
/// with `set_load`.
fn load_policy(fs: &Path, policy: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(fs.join(".replace"))?;
    match f.write(policy)? {
        n if n == policy.len() => Ok(()),
        n => Err(std::io::Error::other(format!(
            "short write ({n} of {} bytes)",
            policy.len()
        ))),
    }
}

/// Unload a profile by name through securityfs `.remove`. A profile that
/// is not loaded is not an error.
fn remove_profile(fs: &Path, name: &str) -> std::io::Result<bool> {
    if profile_mode(fs, name)?.is_none() {
        return Ok(false);
    }
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(fs.join(".remove"))?;
    match f.write(name.as_bytes()) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::securityfs::{status_at, KernelStatus};

    #[test]
    fn probes_a_fake_tree() {
        let d = tempfile::tempdir().unwrap();
        assert!(!status_at(d.path()).is_available());
        std::fs::create_dir_all(d.path().join("sys/module/apparmor/parameters")).unwrap();
        std::fs::write(
            d.path().join("sys/module/apparmor/parameters/enabled"),
            "N\n",
        )
        .unwrap();
        assert!(
            matches!(status_at(d.path()), KernelStatus::Unavailable(r) if r.contains("disabled"))
        );
        std::fs::write(
            d.path().join("sys/module/apparmor/parameters/enabled"),
            "Y\n",
        )
        .unwrap();
        assert!(!status_at(d.path()).is_available());
        std::fs::create_dir_all(d.path().join("sys/kernel/security/apparmor")).unwrap();
        std::fs::write(d.path().join("sys/kernel/security/apparmor/profiles"), "").unwrap();
        assert!(status_at(d.path()).is_available());
        let fs = d.path().join("sys/kernel/security/apparmor");
        std::fs::write(
            fs.join("profiles"),
            "libvirt-x (enforce)\nlxc-a_</v>//&:lxc-a_<-v>:unconfined (enforce)\nweird name (x) (complain)\n",
        )
        .unwrap();
        assert_eq!(
            profile_mode(&fs, "libvirt-x").unwrap().as_deref(),
            Some("enforce")
        );
        assert_eq!(
            profile_mode(&fs, "weird name (x)").unwrap().as_deref(),
            Some("complain")
        );
        assert_eq!(profile_mode(&fs, "libvirt-y").unwrap(), None);
        assert!(!remove_profile(&fs, "libvirt-y").unwrap());
        // The kernel's hash: sha256 preferred, sha1 otherwise, none when
        // the kernel keeps none.
        let k = SystemKernel::with_status(
            KernelStatus::Available { fs: fs.clone() },
            Root::new(d.path()),
        );
        let pd = fs.join("policy/profiles/libvirt-x.3");
        std::fs::create_dir_all(&pd).unwrap();
        std::fs::write(pd.join("name"), "libvirt-x\n").unwrap();
        std::fs::write(pd.join("mode"), "enforce\n").unwrap();
        assert_eq!(k.policy_hash("libvirt-x").unwrap(), None);
        std::fs::write(pd.join("sha1"), "ab12\n").unwrap();
        assert_eq!(
            k.policy_hash("libvirt-x").unwrap().as_deref(),
            Some("sha1:ab12")
        );
        std::fs::write(pd.join("sha256"), "cd34\n").unwrap();
        assert_eq!(
            k.policy_hash("libvirt-x").unwrap().as_deref(),
            Some("sha256:cd34")
        );
        assert_eq!(k.policy_hash("libvirt-y").unwrap(), None);
    }
}
