//! The model: a guest and the host resources it uses.
//!
//! Front ends (libvirt domain XML, LXC config) turn their input into a
//! [`Guest`]; the policy layer turns a guest into rules. Nothing in here knows
//! about AppArmor syntax: paths are raw bytes, exactly as the kernel will see
//! them once resolved.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use crate::policy::escape::display_path;

/// What kind of guest this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    /// A libvirt QEMU/KVM domain.
    Qemu,
    /// An LXC container.
    Lxc,
}

impl fmt::Display for GuestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        })
    }
}

/// File access a guest needs on a path.
///
/// Rendered in the order `m r w a l k` so that the common sets read the way
/// libvirt writes them (`rwk`, `rk`, `rw`, `rwl`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Access {
    /// `m`: mmap with PROT_EXEC.
    pub mmap: bool,
    /// `r`: read.
    pub read: bool,
    /// `w`: write (implies append).
    pub write: bool,
    /// `a`: append only.
    pub append: bool,
    /// `l`: link.
    pub link: bool,
    /// `k`: lock.
    pub lock: bool,
}

impl Access {
    /// `r`
    pub const R: Access = Access::parse_const(b"r");
    /// `w`
    pub const W: Access = Access::parse_const(b"w");
    /// `rw`
    pub const RW: Access = Access::parse_const(b"rw");
    /// `rk`
    pub const RK: Access = Access::parse_const(b"rk");
    /// `rwk`
    pub const RWK: Access = Access::parse_const(b"rwk");
    /// `rwl`
    pub const RWL: Access = Access::parse_const(b"rwl");
    /// `mr`
    pub const MR: Access = Access::parse_const(b"mr");

    const fn parse_const(s: &[u8]) -> Access {
        let mut a = Access {
            mmap: false,
            read: false,
            write: false,
            append: false,
            link: false,
            lock: false,
        };
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'm' => a.mmap = true,
                b'r' => a.read = true,
                b'w' => a.write = true,
                b'a' => a.append = true,
                b'l' => a.link = true,
                b'k' => a.lock = true,
                _ => panic!("invalid access letter"),
            }
            i += 1;
        }
        a
    }

    /// Parse a permission string such as `rwk`. Unknown letters are an error.
    pub fn parse(s: &str) -> Option<Access> {
        let mut a = Access::default();
        for c in s.chars() {
            match c {
                'm' => a.mmap = true,
                'r' => a.read = true,
                'w' => a.write = true,
                'a' => a.append = true,
                'l' => a.link = true,
                'k' => a.lock = true,
                _ => return None,
            }
        }
        Some(a)
    }

    /// The union of two access sets.
    pub fn union(self, o: Access) -> Access {
        Access {
            mmap: self.mmap || o.mmap,
            read: self.read || o.read,
            write: self.write || o.write,
            append: (self.append || o.append) && !(self.write || o.write),
            link: self.link || o.link,
            lock: self.lock || o.lock,
        }
    }

    /// True when `self` grants everything `o` asks for.
    pub fn covers(self, o: Access) -> bool {
        (self.mmap || !o.mmap)
            && (self.read || !o.read)
            && (self.write || !o.write)
            && (self.write || self.append || !o.append)
            && (self.link || !o.link)
            && (self.lock || !o.lock)
    }

    /// True when the access allows modifying the file.
    pub fn writes(self) -> bool {
        self.write || self.append || self.link
    }

    /// True when nothing is granted.
    pub fn is_empty(self) -> bool {
        self == Access::default()
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (on, c) in [
            (self.mmap, 'm'),
            (self.read, 'r'),
            (self.write, 'w'),
            (self.append, 'a'),
            (self.link, 'l'),
            (self.lock, 'k'),
        ] {
            if on {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// How much of the file system under a path a resource covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Exactly this one path.
    File,
    /// The directory itself (`DIR/`, read) and everything below it (`DIR/**`).
    Tree,
}

/// One host path a guest uses, with the access it needs and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// The path as the guest configuration names it (absolute, unresolved).
    #[serde(serialize_with = "ser_path")]
    pub path: PathBuf,
    /// The access needed.
    pub access: Access,
    /// File or whole subtree.
    pub scope: Scope,
    /// Where it comes from, e.g. `disk vda, backing layer 2` or `serial0 (file)`.
    pub origin: String,
}

impl Resource {
    /// A single-file resource.
    pub fn file(path: impl Into<PathBuf>, access: Access, origin: impl Into<String>) -> Self {
        Resource {
            path: path.into(),
            access,
            scope: Scope::File,
            origin: origin.into(),
        }
    }

    /// A directory-tree resource.
    pub fn tree(path: impl Into<PathBuf>, access: Access, origin: impl Into<String>) -> Self {
        Resource {
            path: path.into(),
            access,
            scope: Scope::Tree,
            origin: origin.into(),
        }
    }
}

/// A host path libvirt names after the running domain's short name
/// (`<id>-<first 20 characters of the name>`), such as swtpm's socket
/// `/run/libvirt/qemu/swtpm/<id>-<name>-swtpm.sock` or the hugepage
/// directory `/dev/hugepages/libvirt/qemu/<id>-<name>`.
///
/// The path is `dir/<prefix><id>-<short name><suffix>`. When the domain is
/// not running its id is unknown, and the policy layer writes a glob for the
/// id instead (the same way it names the domain's runtime directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunPath {
    /// The directory holding it (absolute, unresolved).
    #[serde(serialize_with = "ser_path")]
    pub dir: PathBuf,
    /// Text before the id (usually empty).
    pub prefix: String,
    /// Text after the short name (e.g. `-swtpm.sock`; empty for a directory).
    pub suffix: String,
    /// The access needed.
    pub access: Access,
    /// File or whole subtree.
    pub scope: Scope,
    /// Where it comes from.
    pub origin: String,
}

/// Something the guest uses that deliberately gets no file rule, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The device, e.g. `disk vdb`.
    pub origin: String,
    /// Why no rule is needed (e.g. `network disk (nbd): QEMU opens a socket, not a file`).
    pub reason: String,
}

/// A guest and everything on the host it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Guest {
    /// libvirt or LXC.
    pub kind: GuestKind,
    /// The guest's name.
    pub name: String,
    /// The libvirt UUID (LXC containers have none).
    pub uuid: Option<Uuid>,
    /// The domain id when running (libvirt), `None` otherwise.
    pub id: Option<i64>,
    /// Hypervisor type (`kvm`, `qemu`) or `lxc`.
    pub driver: String,
    /// The emulator binary, if the configuration names one.
    #[serde(serialize_with = "ser_opt_path")]
    pub emulator: Option<PathBuf>,
    /// Host paths the guest uses.
    pub resources: Vec<Resource>,
    /// Host paths named after the running domain's id and short name.
    pub run_paths: Vec<RunPath>,
    /// Devices that get no rule, with the reason.
    pub skipped: Vec<Skipped>,
    /// QEMU renders with OpenGL on the host (a `<gl>`-enabled or
    /// egl-headless display, or a 3D-accelerated video device), so it loads
    /// Mesa's drivers and reads GPU facts: the rules include
    /// `abstractions/aa-virt-qemu-gl`.
    pub gl: bool,
}

impl Guest {
    /// A new guest with no resources.
    pub fn new(kind: GuestKind, name: impl Into<String>) -> Self {
        Guest {
            kind,
            name: name.into(),
            uuid: None,
            id: None,
            driver: String::new(),
            emulator: None,
            resources: Vec::new(),
            run_paths: Vec::new(),
            skipped: Vec::new(),
            gl: false,
        }
    }

    /// Add a resource.
    pub fn add(&mut self, r: Resource) {
        self.resources.push(r);
    }

    /// Record a device that deliberately gets no rule.
    pub fn skip(&mut self, origin: impl Into<String>, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            origin: origin.into(),
            reason: reason.into(),
        });
    }
}

/// Build a path from raw bytes.
pub fn path_from_bytes(b: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(b))
}

fn ser_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&display_path(p))
}

fn ser_opt_path<S: serde::Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_str(&display_path(p)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_renders_in_libvirt_order() {
        assert_eq!(Access::RWK.to_string(), "rwk");
        assert_eq!(Access::RK.to_string(), "rk");
        assert_eq!(Access::RWL.to_string(), "rwl");
        assert_eq!(Access::MR.to_string(), "mr");
        assert_eq!(Access::parse("kwr").unwrap().to_string(), "rwk");
        assert!(Access::parse("rwx").is_none());
    }

    #[test]
    fn access_union_and_cover() {
        let u = Access::RK.union(Access::W);
        assert_eq!(u, Access::RWK);
        assert!(Access::RWK.covers(Access::RK));
        assert!(!Access::RK.covers(Access::RWK));
        assert!(Access::RW.covers(Access::parse("a").unwrap()));
        assert!(!Access::R.covers(Access::parse("a").unwrap()));
    }
}
