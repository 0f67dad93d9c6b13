//! Is AppArmor in the running kernel, and can we load policy?

use std::path::{Path, PathBuf};

/// What the running kernel offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelStatus {
    /// AppArmor is enabled and securityfs is mounted.
    Available {
        /// securityfs directory (`/sys/kernel/security/apparmor`).
        fs: PathBuf,
    },
    /// Policy cannot be loaded; the reason says why.
    Unavailable(String),
}

impl KernelStatus {
    /// True when policy can be loaded.
    pub fn is_available(&self) -> bool {
        matches!(self, KernelStatus::Available { .. })
    }
}

/// Probe the kernel under `root` (`/` on a real system; tests point it at a tree).
pub fn status_at(root: &Path) -> KernelStatus {
    let enabled = root.join("sys/module/apparmor/parameters/enabled");
    let fs = root.join("sys/kernel/security/apparmor");
    match std::fs::read_to_string(&enabled) {
        Err(_) => {
            let lsm = std::fs::read_to_string(root.join("sys/kernel/security/lsm")).unwrap_or_default();
            KernelStatus::Unavailable(if lsm.is_empty() {
                "this kernel has no AppArmor support (no /sys/module/apparmor)".into()
            } else {
                format!("AppArmor is not among this kernel's security modules ({})", lsm.trim())
            })
        }
        Ok(s) if s.trim() != "Y" => {
            KernelStatus::Unavailable("AppArmor is built into this kernel but disabled (boot with apparmor=1 security=apparmor)".into())
        }
        Ok(_) if !fs.join("profiles").exists() => KernelStatus::Unavailable(format!(
            "AppArmor is enabled but {} is not mounted (mount -t securityfs securityfs /sys/kernel/security)",
            fs.display()
        )),
        Ok(_) => KernelStatus::Available { fs },
    }
}

/// The mode (`enforce`, `complain`, ...) of a loaded profile in the caller's
/// namespace, from securityfs `profiles` (`name (mode)` per line), or `None`
/// when it is not loaded.
pub fn profile_mode(fs: &Path, name: &str) -> std::io::Result<Option<String>> {
    let text = std::fs::read_to_string(fs.join("profiles"))?;
    Ok(text.lines().find_map(|l| {
        let (n, mode) = super::securityfs::split_mode(l)?;
        (n == name).then(|| mode.as_str().to_string())
    }))
}

/// Unload a profile by name through securityfs `.remove`. A profile that
/// is not loaded is not an error.
pub fn remove_profile(fs: &Path, name: &str) -> std::io::Result<bool> {
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

/// Probe the running kernel.
pub fn status() -> KernelStatus {
    status_at(Path::new("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
