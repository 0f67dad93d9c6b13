//! What aa-virt asks of the kernel's AppArmor beyond reading securityfs:
//! the mode of a loaded profile, and unloading one. Builds on
//! [`super::securityfs`], never the other way round.

use std::path::Path;

use super::securityfs::split_mode;

/// The mode (`enforce`, `complain`, ...) of a loaded profile in the caller's
/// namespace, from securityfs `profiles` (`name (mode)` per line), or `None`
/// when it is not loaded.
pub fn profile_mode(fs: &Path, name: &str) -> std::io::Result<Option<String>> {
    let text = std::fs::read_to_string(fs.join("profiles"))?;
    Ok(text.lines().find_map(|l| {
        let (n, mode) = split_mode(l)?;
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
    }
}
