//! The kernel switch `kernel.unprivileged_userns_apparmor_policy`: may the
//! root of a user namespace manage AppArmor policy?
//!
//! When it is 1 (every Debian kernel's default), the kernel lets a task
//! that is root in a user namespace view, load, replace and remove policy
//! in its label's policy namespace, if that namespace sits at the same
//! depth as the user namespace and the task's profile grants
//! `mac_admin`. Any unconfined user can put a task under any loaded label,
//! so with it on, an ordinary user could enter another container's label
//! `PROFILE//&:NS:`, `unshare -Ur`, and rewrite that container's policy
//! namespace (measured in the Debian 12 and 13 VMs, case 46). With it at 0,
//! only root in the host's user namespace manages policy, which is all
//! aa-virt's containers use: a privileged container loads its namespace's
//! policy from the host's user namespace, and an id-mapped one never could
//! (its securityfs is a read-only bind and a user namespace cannot mount
//! securityfs).

use std::path::{Path, PathBuf};

use super::securityfs::Root;

/// The switch's `sysctl` name.
pub const SYSCTL: &str = "kernel.unprivileged_userns_apparmor_policy";

/// Where the switch lives below a root's procfs.
const PROC_REL: &str = "sys/kernel/unprivileged_userns_apparmor_policy";

/// The switch's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernsPolicy {
    /// 0: only the host's root manages policy.
    Closed,
    /// Anything else: root of a user namespace may manage policy.
    Open,
    /// No such file: the kernel has no user namespaces (or no AppArmor),
    /// so no user namespace can manage policy either.
    Absent,
}

impl UsernsPolicy {
    /// True when no user namespace can manage policy.
    pub fn is_closed(self) -> bool {
        matches!(self, UsernsPolicy::Closed | UsernsPolicy::Absent)
    }
}

/// Errors reading or writing the switch.
#[derive(Debug, thiserror::Error)]
pub enum UsernsPolicyError {
    /// The switch could not be read.
    #[error("cannot read {SYSCTL} ({}): {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The switch could not be set to 0.
    #[error("cannot set {SYSCTL} = 0 ({}): {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The write was taken but the switch still reads open.
    #[error("{SYSCTL} ({}) still reads {value:?} after writing 0", path.display())]
    Stuck {
        /// The file.
        path: PathBuf,
        /// What it reads.
        value: String,
    },
}

/// The switch's file below `root`.
pub fn path(root: &Root) -> PathBuf {
    root.proc_dir().join(PROC_REL)
}

fn read_at(path: &Path) -> Result<(UsernsPolicy, String), UsernsPolicyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let v = text.trim().to_string();
            let state = if v == "0" {
                UsernsPolicy::Closed
            } else {
                UsernsPolicy::Open
            };
            Ok((state, v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((UsernsPolicy::Absent, "".into())),
        Err(source) => Err(UsernsPolicyError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The switch's state below `root` (readable by anyone on a real kernel).
pub fn read(root: &Root) -> Result<UsernsPolicy, UsernsPolicyError> {
    read_at(&path(root)).map(|(s, _)| s)
}

/// Set the switch to 0 (root only) and check that it took. Gives true
/// when this call closed it, false when it was closed or absent already.
pub fn close(root: &Root) -> Result<bool, UsernsPolicyError> {
    let p = path(root);
    if read_at(&p)?.0.is_closed() {
        return Ok(false);
    }
    std::fs::write(&p, "0\n").map_err(|source| UsernsPolicyError::Write {
        path: p.clone(),
        source,
    })?;
    match read_at(&p)? {
        (UsernsPolicy::Closed, _) => Ok(true),
        (_, value) => Err(UsernsPolicyError::Stuck { path: p, value }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_open_and_closed() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        assert_eq!(read(&root).unwrap(), UsernsPolicy::Absent);
        assert!(!close(&root).unwrap(), "absent: nothing to close");
        std::fs::create_dir_all(path(&root).parent().unwrap()).unwrap();
        std::fs::write(path(&root), "1\n").unwrap();
        assert_eq!(read(&root).unwrap(), UsernsPolicy::Open);
        assert!(!UsernsPolicy::Open.is_closed());
        assert!(close(&root).unwrap());
        assert_eq!(std::fs::read_to_string(path(&root)).unwrap(), "0\n");
        assert_eq!(read(&root).unwrap(), UsernsPolicy::Closed);
        assert!(!close(&root).unwrap(), "closed twice is a no-op");
    }

    #[test]
    fn an_unwritable_switch_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        // A directory where the file should be: reads fail, not "absent".
        std::fs::create_dir_all(path(&root)).unwrap();
        let e = close(&root).unwrap_err().to_string();
        assert!(e.contains(SYSCTL), "{e}");
    }
}
