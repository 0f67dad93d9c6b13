//! Disks: the top image, its external data file, its backing chain (from the
//! XML or from image headers) and the disk kinds that are not host files.

use roxmltree::Node;

use super::{attr, child, DomainError, Reader};
use crate::guest::Access;

impl Reader<'_> {
    /// `<disk>`: file, block and dir sources; read-only and shareable;
    /// cdrom and floppy; `<dataStore>`; backing layers `rk` (never a deny
    /// rule, so a later blockcommit can still be granted write access);
    /// persistent-reservation helper sockets; vhost-user sockets. Network,
    /// volume, NVMe and vhost-vdpa disks get no file rule, with the reason.
    pub(crate) fn disk(&mut self, disk: Node<'_, '_>) -> Result<(), DomainError> {
        let target = child(disk, "target")
            .and_then(|t| attr(t, "dev"))
            .unwrap_or("?");
        let device = disk.attribute("device").unwrap_or("disk");
        let origin = match device {
            "disk" => format!("disk {target}"),
            other => format!("disk {target} ({other})"),
        };
        let readonly = child(disk, "readonly").is_some();
        let top = if readonly { Access::RK } else { Access::RWK };
        let ty = disk.attribute("type").unwrap_or("file");
        if let Some(src) = child(disk, "source") {
            self.reservations(src, &origin);
        }
        if ty == "vhostuser" {
            match child(disk, "source").and_then(|s| attr(s, "path")) {
                Some(p) => self.file(p, Access::RW, format!("{origin} (vhost-user socket)")),
                None => self.g.skip(origin, "vhost-user disk without a socket path"),
            }
            return Ok(());
        }
        let path = local_source(disk, ty);
        match &path {
            Some(path) if ty == "dir" => {
                // QEMU's vvfat driver reads (and with write access, writes)
                // the whole directory.
                self.tree(path, top, origin.clone());
            }
            Some(path) => self.file(path, top, origin.clone()),
            None => self.non_local_disk(disk, ty, &origin),
        }
        if let Some(src) = child(disk, "source") {
            self.data_store(src, top, &origin);
        }
        match (child(disk, "backingStore"), &path) {
            // A network or empty top can still sit on local backing files.
            (Some(bs), _) => self.backing_from_xml(bs, &origin, 1)?,
            (None, Some(path)) if self.opts.probe_chains && ty != "dir" => {
                let fmt = child(disk, "driver").and_then(|d| d.attribute("type"));
                self.backing_from_headers(path, fmt, &origin)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A disk with no local source: the reason it gets no file rule, and
    /// for a network disk reached over a UNIX socket, that socket.
    fn non_local_disk(&mut self, disk: Node<'_, '_>, ty: &str, origin: &str) {
        let why = match ty {
            "network" => {
                if let Some(sock) = child(disk, "source")
                    .and_then(|s| child(s, "host"))
                    .filter(|h| h.attribute("transport") == Some("unix"))
                    .and_then(|h| attr(h, "socket"))
                {
                    self.file(sock, Access::RW, format!("{origin} (server socket)"));
                    return;
                }
                "network disk: QEMU talks to the server over the network, no host file to grant"
            }
            "volume" => {
                "storage-pool volume: libvirt translates it to a path only when the guest \
                 starts; the hook's XML carries that path"
            }
            "nvme" => {
                "NVMe disk: QEMU drives the controller through VFIO; libvirt hands it the \
                 device's /dev/vfio group at start"
            }
            "vhostvdpa" => "vhost-vdpa disk: libvirt opens the device and hands QEMU a descriptor",
            "file" | "block" | "dir" => "empty drive (no medium inserted): nothing to grant",
            _ => "unknown disk type: no host file",
        };
        self.g.skip(origin, why);
    }

    /// `<source><dataStore>`: a qcow2 image's external data file, with its
    /// layer's access.
    fn data_store(&mut self, src: Node<'_, '_>, access: Access, origin: &str) {
        if let Some(ds) = child(src, "dataStore") {
            let ty = ds.attribute("type").unwrap_or("file");
            match local_source(ds, ty) {
                Some(p) => self.file(p, access, format!("{origin}, data file")),
                None => self.g.skip(
                    format!("{origin}, data file"),
                    format!("{ty} data store: no local file"),
                ),
            }
        }
    }

    /// `<source><reservations><source type='unix' path=…>`: the
    /// persistent-reservation helper's socket.
    fn reservations(&mut self, src: Node<'_, '_>, origin: &str) {
        if let Some(p) = child(src, "reservations")
            .and_then(|r| child(r, "source"))
            .and_then(|s| attr(s, "path"))
        {
            self.file(
                p,
                Access::RW,
                format!("{origin}, reservations helper socket"),
            );
        }
    }

    fn backing_from_xml(
        &mut self,
        mut bs: Node<'_, '_>,
        origin: &str,
        mut depth: usize,
    ) -> Result<(), DomainError> {
        loop {
            let ty = bs.attribute("type").unwrap_or("file");
            if bs.children().all(|c| !c.is_element()) {
                return Ok(()); // <backingStore/>: end of chain
            }
            if depth > crate::libvirt::image::MAX_CHAIN_DEPTH {
                return Err(self.err(
                    origin,
                    format!(
                        "backing chain deeper than {} layers",
                        crate::libvirt::image::MAX_CHAIN_DEPTH
                    ),
                ));
            }
            let layer = format!("{origin}, backing layer {depth}");
            match local_source(bs, ty) {
                Some(p) => {
                    self.file(p, Access::RK, layer.clone());
                    if let Some(src) = child(bs, "source") {
                        self.data_store(src, Access::RK, &layer);
                    }
                }
                None => self.g.skip(
                    layer,
                    format!("{ty} backing store: QEMU reaches it over the network, no host file"),
                ),
            }
            match child(bs, "backingStore") {
                Some(next) => {
                    bs = next;
                    depth += 1;
                }
                None => return Ok(()),
            }
        }
    }

    fn backing_from_headers(
        &mut self,
        top: &str,
        fmt: Option<&str>,
        origin: &str,
    ) -> Result<(), DomainError> {
        let chain = crate::libvirt::image::chain(std::path::Path::new(top), fmt)
            .map_err(|e| self.err(origin, e.to_string()))?;
        for (i, layer) in chain.into_iter().enumerate() {
            self.file(
                layer.path,
                Access::RK,
                format!("{origin}, backing layer {}", i + 1),
            );
        }
        Ok(())
    }
}

/// The local path of a disk-like element's `<source>`, if it has one.
fn local_source(n: Node<'_, '_>, ty: &str) -> Option<String> {
    let src = child(n, "source")?;
    let a = match ty {
        "file" => "file",
        "block" => "dev",
        "dir" => "dir",
        _ => return None,
    };
    attr(src, a).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn file_block_dir_readonly_shareable() {
        let g = devs(
            "<disk type='file' device='disk'><source file='/srv/a.qcow2'/><target dev='vda'/></disk>\
             <disk type='block' device='disk'><source dev='/dev/vg/b'/><target dev='vdb'/><shareable/></disk>\
             <disk type='dir' device='disk'><source dir='/srv/tree'/><target dev='hda'/><readonly/></disk>\
             <disk type='file' device='cdrom'><source file='/srv/x.iso'/><target dev='sda'/><readonly/></disk>\
             <disk type='file' device='floppy'><source file='/srv/f.img'/><target dev='fda'/></disk>",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/srv/a.qcow2", "rwk", "disk vda"),
                f("/dev/vg/b", "rwk", "disk vdb"),
                t("/srv/tree", "rk", "disk hda"),
                f("/srv/x.iso", "rk", "disk sda (cdrom)"),
                f("/srv/f.img", "rwk", "disk fda (floppy)"),
            ]
        );
    }

    #[test]
    fn backing_layers_are_rk_and_data_files_follow_their_layer() {
        let g = devs(
            "<disk type='file'><driver type='qcow2'/>\
               <source file='/srv/top.qcow2'><dataStore type='file'><format type='raw'/><source file='/srv/top.data'/></dataStore></source>\
               <backingStore type='block'><format type='qcow2'/><source dev='/dev/vg/mid'/>\
                 <backingStore type='network'><source protocol='nbd' name='x'/>\
                   <backingStore/></backingStore></backingStore>\
               <target dev='vda'/></disk>",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/srv/top.qcow2", "rwk", "disk vda"),
                f("/srv/top.data", "rwk", "disk vda, data file"),
                f("/dev/vg/mid", "rk", "disk vda, backing layer 1"),
            ]
        );
        assert_eq!(
            skips(&g),
            vec![(
                "disk vda, backing layer 2".to_string(),
                "network backing store: QEMU reaches it over the network, no host file".to_string()
            )]
        );
    }

    #[test]
    fn non_file_disks_are_skipped_with_reasons() {
        let g = devs(
            "<disk type='network'><source protocol='rbd' name='p/i'/><target dev='vda'/></disk>\
             <disk type='volume'><source pool='default' volume='v'/><target dev='vdb'/></disk>\
             <disk type='nvme'><source type='pci' managed='yes' namespace='1'><address domain='0' bus='1' slot='0' function='0'/></source><target dev='vdc'/></disk>\
             <disk type='file' device='cdrom'><target dev='sdb'/><readonly/></disk>\
             <disk type='vhostuser'><source type='unix' path='/run/vhost/blk.sock'/><target dev='vdd'/></disk>",
        );
        assert_eq!(
            g.resources,
            vec![f(
                "/run/vhost/blk.sock",
                "rw",
                "disk vdd (vhost-user socket)"
            )]
        );
        let s = skips(&g);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].0, "disk vda");
        assert!(s[0].1.starts_with("network disk"));
        assert!(s[1].1.starts_with("storage-pool volume"));
        assert!(s[2].1.starts_with("NVMe disk"));
        assert_eq!(s[3].0, "disk sdb (cdrom)");
        assert!(s[3].1.starts_with("empty drive"));
    }

    #[test]
    fn network_top_over_a_unix_socket_with_local_backing_layers() {
        let g = devs(
            "<disk type='network'><driver type='qcow2'/>\
               <source protocol='nbd' name='bar'><host transport='unix' socket='/run/nbd.sock'/></source>\
               <backingStore type='file'><format type='qcow2'/><source file='/srv/base.qcow2'/><backingStore/></backingStore>\
               <target dev='vda'/></disk>",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/run/nbd.sock", "rw", "disk vda (server socket)"),
                f("/srv/base.qcow2", "rk", "disk vda, backing layer 1"),
            ]
        );
    }

    #[test]
    fn reservations_socket() {
        let g = devs(
            "<disk type='block' device='lun'><source dev='/dev/sdz'>\
             <reservations managed='no'><source type='unix' path='/run/pr.sock' mode='client'/></reservations>\
             </source><target dev='sda'/></disk>",
        );
        assert_eq!(
            g.resources,
            vec![
                f(
                    "/run/pr.sock",
                    "rw",
                    "disk sda (lun), reservations helper socket"
                ),
                f("/dev/sdz", "rwk", "disk sda (lun)"),
            ]
        );
    }
}
