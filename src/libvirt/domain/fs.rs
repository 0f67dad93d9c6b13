//! Shared directories and guest memory: `<filesystem>` (9p, virtiofs) and
//! `<memoryBacking>` (hugepages, file-backed memory).

use std::path::PathBuf;

use roxmltree::Node;

use super::{attr, child, DomainError, Reader};
use crate::guest::{Access, RunPath, Scope};
use crate::policy::escape::unescape_mount_field;

/// Where libvirt puts file-backed guest memory (`memory_backing_dir` in
/// qemu.conf); each running domain gets `<dir>/<id>-<short name>/`.
pub const MEMORY_BACKING_DIR: &str = "/var/lib/libvirt/qemu/ram";

/// The hugetlbfs mount used when the host has none mounted yet.
pub const DEFAULT_HUGETLBFS: &str = "/dev/hugepages";

impl Reader<'_> {
    /// `<filesystem>`: a 9p share gets its tree (`rwl`, or `r` when
    /// read-only); a virtiofs share gets the daemon's socket when the XML
    /// names one. Other types are LXC's.
    pub(crate) fn filesystem(&mut self, fs: Node<'_, '_>) {
        let ty = fs.attribute("type").unwrap_or("mount");
        let driver = child(fs, "driver").and_then(|d| d.attribute("type"));
        let target = child(fs, "target")
            .and_then(|t| attr(t, "dir"))
            .unwrap_or("?");
        let src = child(fs, "source");
        if ty != "mount" {
            self.g.skip(
                format!("filesystem {target} ({ty})"),
                format!("{ty} filesystem: used by LXC containers, not by QEMU"),
            );
            return;
        }
        match driver {
            Some("virtiofs") => {
                let origin = format!("filesystem {target} (virtiofs)");
                match src.and_then(|s| attr(s, "socket")) {
                    Some(sock) => self.file(sock, Access::RW, origin),
                    None => self.g.skip(
                        origin,
                        "virtiofs: libvirt starts virtiofsd, which shares the directory, and \
                         labels the socket QEMU connects to when the guest starts; QEMU never \
                         opens the directory",
                    ),
                }
            }
            None | Some("path") | Some("handle") => {
                let origin = format!("filesystem {target} (9p)");
                match src.and_then(|s| attr(s, "dir")) {
                    Some(dir) if child(fs, "readonly").is_some() => {
                        self.tree(dir, Access::R, origin)
                    }
                    Some(dir) => self.tree(dir, Access::RWL, origin),
                    None => self.g.skip(origin, "9p share without a source directory"),
                }
            }
            Some(other) => self.g.skip(
                format!("filesystem {target} ({other})"),
                format!("{other} filesystem driver: used by LXC containers, not by QEMU"),
            ),
        }
    }

    /// `<memoryBacking>`: hugepages get the domain's directory on every
    /// hugetlbfs mount; file-backed (or shared, non-memfd) memory gets its
    /// directory under [`MEMORY_BACKING_DIR`]. Both are named by the
    /// domain's id and short name, as libvirt names them.
    pub(crate) fn memory_backing(
        &mut self,
        mb: Node<'_, '_>,
        root: Node<'_, '_>,
    ) -> Result<(), DomainError> {
        let source = child(mb, "source").and_then(|s| s.attribute("type"));
        if child(mb, "hugepages").is_some() {
            for m in self.hugetlbfs_mounts() {
                self.g.run_paths.push(RunPath {
                    dir: m.join("libvirt/qemu"),
                    prefix: String::new(),
                    suffix: String::new(),
                    access: Access::RWK,
                    scope: Scope::Tree,
                    origin: "memoryBacking hugepages".into(),
                });
            }
            return Ok(());
        }
        let shared = child(mb, "access").and_then(|a| a.attribute("mode")) == Some("shared")
            || root.descendants().any(|n| {
                n.tag_name().name() == "cell" && n.attribute("memAccess") == Some("shared")
            });
        if source == Some("file") || (shared && source.is_none()) {
            self.g.run_paths.push(RunPath {
                dir: MEMORY_BACKING_DIR.into(),
                prefix: String::new(),
                suffix: String::new(),
                access: Access::RWK,
                scope: Scope::Tree,
                origin: "memoryBacking file".into(),
            });
        }
        Ok(())
    }

    /// hugetlbfs mount points from `/proc/mounts` (under the sysfs root);
    /// [`DEFAULT_HUGETLBFS`] when none is mounted. libvirt puts a domain's
    /// huge pages in `<mount>/libvirt/qemu/<id>-<short name>` on the mount
    /// matching the page size; granting the domain's own directory on each
    /// mount keeps every page size working without guessing which is which.
    fn hugetlbfs_mounts(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_to_string(self.host("proc/mounts"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, mnt, fstype) = (f.next()?, f.next()?, f.next()?);
                (fstype == "hugetlbfs")
                    .then(|| crate::guest::path_from_bytes(unescape_mount_field(mnt)))
            })
            .collect();
        v.dedup();
        if v.is_empty() {
            v.push(DEFAULT_HUGETLBFS.into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::guest::{Access, RunPath, Scope};

    #[test]
    fn ninep_rw_and_ro_virtiofs_socket_or_skip() {
        let g = devs(
            "<filesystem type='mount' accessmode='passthrough'><source dir='/srv/share'/><target dir='share'/></filesystem>\
             <filesystem type='mount'><driver type='path'/><source dir='/srv/ro'/><target dir='ro'/><readonly/></filesystem>\
             <filesystem type='mount'><driver type='virtiofs'/><source socket='/run/vfsd.sock'/><target dir='vfs'/></filesystem>\
             <filesystem type='mount'><driver type='virtiofs'/><source dir='/srv/v2'/><target dir='vfs2'/></filesystem>\
             <filesystem type='ram'><source usage='1024'/><target dir='/mnt'/></filesystem>",
        );
        assert_eq!(
            g.resources,
            vec![
                t("/srv/share", "rwl", "filesystem share (9p)"),
                t("/srv/ro", "r", "filesystem ro (9p)"),
                f("/run/vfsd.sock", "rw", "filesystem vfs (virtiofs)"),
            ]
        );
        let s = skips(&g);
        assert_eq!(s[0].0, "filesystem vfs2 (virtiofs)");
        assert!(s[0].1.contains("libvirt starts virtiofsd"));
        assert_eq!(s[1].0, "filesystem /mnt (ram)");
    }

    #[test]
    fn hugepages_use_the_hosts_hugetlbfs_mounts() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::write(
            d.path().join("proc/mounts"),
            "proc /proc proc rw 0 0\nhugetlbfs /dev/hugepages hugetlbfs rw,pagesize=2M 0 0\n\
             none /mnt/huge\\0401G hugetlbfs rw,pagesize=1024M 0 0\n",
        )
        .unwrap();
        let g = try_guest(
            "",
            "",
            "<memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages></memoryBacking>",
            &crate::libvirt::domain::hostdev::tests::opts(d.path()),
        )
        .unwrap();
        let rp = |dir: &str| RunPath {
            dir: dir.into(),
            prefix: String::new(),
            suffix: String::new(),
            access: Access::RWK,
            scope: Scope::Tree,
            origin: "memoryBacking hugepages".into(),
        };
        assert_eq!(
            g.run_paths,
            vec![
                rp("/dev/hugepages/libvirt/qemu"),
                rp("/mnt/huge 1G/libvirt/qemu")
            ]
        );
        // No mount: libvirt's default.
        let g = guest("", "", "<memoryBacking><hugepages/></memoryBacking>");
        assert_eq!(
            g.run_paths[0].dir,
            std::path::Path::new("/dev/hugepages/libvirt/qemu")
        );
    }

    #[test]
    fn file_and_shared_memory_use_the_ram_dir_memfd_does_not() {
        let g = guest(
            "",
            "",
            "<memoryBacking><source type='file'/></memoryBacking>",
        );
        assert_eq!(g.run_paths.len(), 1);
        assert_eq!(
            g.run_paths[0].dir,
            std::path::Path::new("/var/lib/libvirt/qemu/ram")
        );
        assert_eq!(g.run_paths[0].origin, "memoryBacking file");
        let g = guest(
            "",
            "",
            "<memoryBacking><access mode='shared'/></memoryBacking>",
        );
        assert_eq!(g.run_paths.len(), 1);
        let g = guest(
            "",
            "",
            "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>",
        );
        assert!(g.run_paths.is_empty());
    }
}
