//! Resolving paths as the kernel sees them, and the list of host paths a
//! guest may never be given.
//!
//! AppArmor mediates the path the kernel reaches after following every
//! symlink and `..`, so a rule must name that path. [`resolve`] walks the
//! path component by component like the kernel's lookup does: symlinks are
//! followed (at most [`MAX_SYMLINKS`] of them, as the kernel allows), and
//! once a component does not exist the rest is normalised lexically, because
//! nothing below a missing directory can be a link yet.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::escape::display_path;

/// The kernel's limit on symlinks followed in one lookup.
pub const MAX_SYMLINKS: usize = 40;

/// Why a path could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// More than [`MAX_SYMLINKS`] links, usually a loop.
    #[error("too many levels of symbolic links resolving {0:?} (a symlink loop?)")]
    Loop(String),
    /// A symlink whose target is not a path (e.g. `socket:[123]` under /proc).
    #[error("{path:?} is a link to {target:?}, which is not a file system path")]
    NotAPath {
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// The path is not absolute.
    #[error("path {0:?} is not absolute")]
    Relative(String),
    /// An I/O error other than "does not exist".
    #[error("cannot look up {path:?}: {source}")]
    Io {
        /// The component being looked up.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// Resolve `path` as the kernel would: follow symlinks in every existing
/// component, apply `.` and `..`, and keep a missing tail as written.
pub fn resolve(path: &Path) -> Result<PathBuf, ResolveError> {
    if !path.is_absolute() {
        return Err(ResolveError::Relative(display_path(path)));
    }
    let mut links = 0usize;
    // Components still to walk, in reverse so that pop() gives the next one.
    let mut todo: Vec<Vec<u8>> = split(path);
    todo.reverse();
    let mut out = PathBuf::from("/");
    let mut missing = false;
    while let Some(comp) = todo.pop() {
        match comp.as_slice() {
            b"." => continue,
            b".." => {
                out.pop();
                continue;
            }
            _ => {}
        }
        let cand = out.join(OsStr::from_bytes(&comp));
        if missing {
            out = cand;
            continue;
        }
        match std::fs::symlink_metadata(&cand) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::Loop(display_path(path)));
                }
                let target = std::fs::read_link(&cand).map_err(|e| ResolveError::Io {
                    path: display_path(&cand),
                    source: e,
                })?;
                let tb = target.as_os_str().as_bytes();
                if tb.is_empty()
                    || (!target.is_absolute() && tb.contains(&b':') && cand.starts_with("/proc"))
                {
                    return Err(ResolveError::NotAPath {
                        path: display_path(&cand),
                        target: display_path(&target),
                    });
                }
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                let mut t = split(&target);
                t.reverse();
                todo.extend(t);
            }
            Ok(_) => out = cand,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                missing = true;
                out = cand;
            }
            Err(e) => {
                return Err(ResolveError::Io {
                    path: display_path(&cand),
                    source: e,
                })
            }
        }
    }
    Ok(out)
}

fn split(p: &Path) -> Vec<Vec<u8>> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.as_bytes().to_vec()),
            Component::CurDir => Some(b".".to_vec()),
            Component::ParentDir => Some(b"..".to_vec()),
            Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Host locations no guest may touch at all, with the reason given to the user.
const RESTRICTED: &[(&str, &str)] = &[
    ("/etc", "host configuration"),
    ("/proc", "kernel and process state"),
    ("/sys", "kernel and device state"),
    ("/bin", "host binaries"),
    ("/sbin", "host binaries"),
    ("/lib", "host libraries"),
    ("/lib32", "host libraries"),
    ("/lib64", "host libraries"),
    ("/libx32", "host libraries"),
    ("/usr", "host software"),
    ("/lost+found", "file system recovery area"),
    ("/selinux", "security policy"),
    ("/dev/mem", "physical memory"),
    ("/dev/kmem", "kernel memory"),
    ("/dev/port", "I/O ports"),
    ("/dev/kmsg", "kernel log"),
    ("/run/apparmor", "AppArmor state"),
    ("/var/lib/apparmor", "AppArmor state"),
    ("/var/cache/apparmor", "AppArmor compiled policy"),
    ("/boot", "host boot files"),
    ("/vmlinuz", "host kernel"),
    ("/vmlinuz.old", "host kernel"),
    ("/initrd.img", "host initrd"),
    ("/initrd.img.old", "host initrd"),
    ("/initrd", "host initrd"),
];

/// Locations under a restricted prefix that a guest may read (never write):
/// firmware images and boot files.
const READ_ONLY_OK: &[&str] = &[
    "/boot",
    "/vmlinuz",
    "/vmlinuz.old",
    "/initrd.img",
    "/initrd.img.old",
    "/initrd",
    "/usr/share/edk2",
    "/usr/share/edk2-ovmf",
    "/usr/share/OVMF",
    "/usr/share/ovmf",
    "/usr/share/AAVMF",
    "/usr/share/qemu-efi",
    "/usr/share/qemu-efi-aarch64",
    "/usr/share/qemu-efi-loongarch64",
    "/usr/share/qemu-efi-riscv64",
    "/usr/share/qemu",
    "/usr/share/seabios",
    "/usr/share/ipxe",
    "/usr/lib/u-boot",
    "/usr/lib/riscv64-linux-gnu/opensbi",
    // The host's NSS certificate database, read by QEMU for smartcard
    // emulation (<smartcard mode='host'>).
    "/etc/pki/nssdb",
];

/// Locations under a restricted prefix that a guest may use with the access
/// its device needs: PCI device files for passthrough, vhost-scsi targets.
/// Matched as string prefixes of the resolved path (`/sys/devices/pci0000:00/…`).
const ALLOWED: &[&str] = &[
    "/sys/devices/pci",
    "/sys/kernel/config/target/vhost",
    "/etc/libvirt-sandbox/services",
];

/// Host directories a container may bind in read-only although they are
/// restricted: world-readable system software (LXC's busybox and
/// application-container templates bind `/lib` and `/usr/lib` this way) and
/// securityfs, which a container's profile lets it mount itself anyway.
const READ_ONLY_BIND_OK: &[&str] = &[
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr",
    "/sys/kernel/security",
];

/// True when a resolved path is, or is below, one of the read-only bind
/// exceptions (component-wise).
pub fn read_only_bind_ok(resolved: &Path) -> bool {
    READ_ONLY_BIND_OK.iter().any(|d| under(resolved, d))
}

/// Firmware directories: a writable loader there is refused, never granted.
pub fn is_firmware_dir(p: &Path) -> bool {
    READ_ONLY_OK
        .iter()
        .filter(|d| d.starts_with("/usr/"))
        .any(|d| under(p, d))
}

/// True when `p` is `prefix` or below it (component-wise, not by string).
fn under(p: &Path, prefix: &str) -> bool {
    p.starts_with(prefix)
}

/// Why a resolved path may not be granted, or `None` when it may.
///
/// `tree` is true when the grant covers everything below the path too; such
/// a grant is refused when a restricted location lies inside it (a share of
/// `/` or `/var` would otherwise hand out `/etc` or AppArmor's own state).
pub fn restriction(resolved: &Path, writes: bool, tree: bool) -> Option<String> {
    if tree {
        if let Some((p, why)) = RESTRICTED
            .iter()
            .find(|(p, _)| Path::new(p).starts_with(resolved))
        {
            return Some(format!(
                "a grant of everything under {} would include {p} ({why})",
                display_path(resolved)
            ));
        }
    }
    if ALLOWED
        .iter()
        .any(|a| resolved.as_os_str().as_bytes().starts_with(a.as_bytes()))
    {
        return None;
    }
    if !writes && READ_ONLY_OK.iter().any(|a| under(resolved, a)) {
        return None;
    }
    let (prefix, why) = RESTRICTED
        .iter()
        .filter(|(p, _)| under(resolved, p))
        .max_by_key(|(p, _)| p.len())?;
    if READ_ONLY_OK.iter().any(|a| under(resolved, a)) {
        return Some(format!(
            "{} is under {prefix} ({why}), which guests may only read",
            display_path(resolved)
        ));
    }
    Some(format!(
        "{} is under {prefix} ({why}), which guests may not use",
        display_path(resolved)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn lexical_normalisation_of_missing_tail() {
        let r = resolve(Path::new("/nonexistent-aa-virt/./a/../b//c")).unwrap();
        assert_eq!(r, Path::new("/nonexistent-aa-virt/b/c"));
        assert_eq!(resolve(Path::new("/../..")).unwrap(), Path::new("/"));
    }

    #[test]
    fn follows_symlinks_including_dangling() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("img")).unwrap();
        symlink(real.join("img"), real.join("link")).unwrap();
        symlink("img/absent.qcow2", real.join("dangling")).unwrap();
        assert_eq!(
            resolve(&real.join("link/x.img")).unwrap(),
            real.join("img/x.img")
        );
        assert_eq!(
            resolve(&real.join("dangling")).unwrap(),
            real.join("img/absent.qcow2")
        );
        symlink("/etc/shadow", real.join("evil")).unwrap();
        assert_eq!(
            resolve(&real.join("evil")).unwrap(),
            Path::new("/etc/shadow")
        );
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().canonicalize().unwrap();
        symlink(real.join("b"), real.join("a")).unwrap();
        symlink(real.join("a"), real.join("b")).unwrap();
        assert!(matches!(
            resolve(&real.join("a/x")),
            Err(ResolveError::Loop(_))
        ));
    }

    fn restriction_f(p: &Path, w: bool) -> Option<String> {
        restriction(p, w, false)
    }

    #[test]
    fn trees_that_contain_restricted_places() {
        assert!(restriction(Path::new("/"), false, true).is_some());
        assert!(restriction(Path::new("/var"), false, true).is_some());
        assert!(restriction(Path::new("/srv/share"), true, true).is_none());
        assert!(restriction(Path::new("/dev"), true, true).is_some());
    }

    #[test]
    fn restricted_paths() {
        assert!(restriction_f(Path::new("/etc/shadow"), false).is_some());
        assert!(restriction_f(Path::new("/etcetera/x.img"), true).is_none());
        assert!(restriction_f(Path::new("/usr/share/OVMF/OVMF_CODE.fd"), false).is_none());
        assert!(
            restriction_f(Path::new("/usr/share/OVMF/OVMF_CODE.fd"), true)
                .unwrap()
                .contains("only read")
        );
        assert!(restriction_f(Path::new("/boot/vmlinuz"), false).is_none());
        assert!(restriction_f(Path::new("/boot/vmlinuz"), true).is_some());
        assert!(restriction_f(
            Path::new("/sys/devices/pci0000:00/0000:00:02.0/config"),
            true
        )
        .is_none());
        assert!(restriction_f(Path::new("/sys/kernel/uevent_helper"), true).is_some());
        assert!(restriction_f(Path::new("/var/lib/libvirt/images/a.qcow2"), true).is_none());
        assert!(restriction_f(Path::new("/dev/mem"), false).is_some());
        assert!(restriction_f(Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"), false).is_some());
    }
}
