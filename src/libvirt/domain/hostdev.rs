//! Host devices: USB, PCI (and SR-IOV interfaces), mediated devices, SCSI
//! and vhost-scsi. Each device is looked up in the host's sysfs (under
//! [`super::ReadOptions::sysfs_root`]), so the profile names exactly the
//! device node and the one IOMMU group the guest gets. A device the host
//! does not have is an error naming it, never a silently missing rule.

use std::path::{Path, PathBuf};

use roxmltree::Node;

use super::{attr, child, DomainError, Reader};
use crate::guest::Access;

/// Parse a libvirt number the way libvirt does (`0x` prefix means hex).
fn num(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A sysfs attribute file's value, trimmed.
fn read_attr(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

impl Reader<'_> {
    /// `<hostdev>`.
    pub(crate) fn hostdev(&mut self, hd: Node<'_, '_>) -> Result<(), DomainError> {
        let origin = self.next_origin("hostdev");
        if hd.attribute("mode") == Some("capabilities") {
            self.g.skip(
                origin,
                "capabilities-mode host device: used by LXC containers, not by QEMU",
            );
            return Ok(());
        }
        let src = child(hd, "source");
        match hd.attribute("type").unwrap_or("") {
            "usb" => self.usb(hd, src, &origin),
            "pci" => {
                let vfio = child(hd, "driver")
                    .and_then(|d| d.attribute("name"))
                    .is_none_or(|n| n == "vfio");
                match src.and_then(|s| child(s, "address")) {
                    Some(a) => self.pci(a, vfio, &format!("{origin} (pci)")),
                    None => Err(self.err(&origin, "PCI host device without a source <address>")),
                }
            }
            "mdev" => self.mdev(src, &origin),
            "scsi" => self.scsi(hd, src, &origin),
            "scsi_host" => {
                self.file(
                    "/dev/vhost-scsi",
                    Access::RW,
                    format!("{origin} (vhost-scsi)"),
                );
                Ok(())
            }
            other => {
                self.g.skip(
                    origin,
                    format!("{other} host device: not supported by QEMU here"),
                );
                Ok(())
            }
        }
    }

    fn usb(
        &mut self,
        hd: Node<'_, '_>,
        src: Option<Node<'_, '_>>,
        origin: &str,
    ) -> Result<(), DomainError> {
        let optional = [Some(hd), src]
            .into_iter()
            .flatten()
            .any(|n| n.attribute("startupPolicy") == Some("optional"));
        let id = |el: &str| {
            src.and_then(|s| child(s, el))
                .and_then(|v| attr(v, "id"))
                .and_then(num)
        };
        let (vendor, product) = (id("vendor"), id("product"));
        let addr = src.and_then(|s| child(s, "address"));
        let bus = addr.and_then(|a| attr(a, "bus")).and_then(num);
        let dev = addr.and_then(|a| attr(a, "device")).and_then(num);
        let what =
            match (vendor, product, bus, dev) {
                (Some(v), Some(p), _, _) => format!("USB device {v:04x}:{p:04x}"),
                (_, _, Some(b), Some(d)) => format!("USB device on bus {b} address {d}"),
                _ => return Err(self.err(
                    origin,
                    "USB host device names neither <vendor>/<product> nor <address bus= device=>",
                )),
            };
        let o = format!("{origin} (usb)");
        let mut found = Vec::new();
        let base = self.host("sys/bus/usb/devices");
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                let d = e.path();
                let hex = |n: &str| read_attr(&d, n).and_then(|s| u32::from_str_radix(&s, 16).ok());
                let dec = |n: &str| read_attr(&d, n).and_then(|s| s.parse::<u32>().ok());
                let (Some(b), Some(n)) = (dec("busnum"), dec("devnum")) else {
                    continue;
                };
                let ok = vendor.is_none_or(|v| hex("idVendor") == Some(v))
                    && product.is_none_or(|p| hex("idProduct") == Some(p))
                    && bus.is_none_or(|x| x == b)
                    && dev.is_none_or(|x| x == n);
                if ok {
                    found.push((b, n));
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        match found.as_slice() {
            [(b, n)] => {
                self.file(format!("/dev/bus/usb/{b:03}/{n:03}"), Access::RW, o);
                Ok(())
            }
            [] if optional => {
                self.g.skip(
                    o,
                    format!(
                        "{what} is not attached to this host; startupPolicy='optional' \
                         lets the guest start without it"
                    ),
                );
                Ok(())
            }
            [] => Err(self.err(
                origin,
                format!(
                    "{what} is not attached to this host (nothing matches in {}); plug it in, \
                     or set startupPolicy='optional' on its <source> to start without it",
                    base.display()
                ),
            )),
            many => Err(self.err(
                origin,
                format!(
                    "{what} matches {} devices ({}); add <address bus='…' device='…'/> to \
                     pick one",
                    many.len(),
                    many.iter()
                        .map(|(b, n)| format!("bus {b} address {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// A PCI device given by its `<address domain bus slot function>`: its
    /// sysfs files, and with VFIO its own IOMMU group's `/dev/vfio/N`.
    pub(crate) fn pci(
        &mut self,
        a: Node<'_, '_>,
        vfio: bool,
        origin: &str,
    ) -> Result<(), DomainError> {
        let f = |n: &str| attr(a, n).and_then(num);
        let (Some(bus), Some(slot), Some(func)) = (f("bus"), f("slot"), f("function")) else {
            return Err(self.err(origin, "PCI address needs bus, slot and function"));
        };
        let addr = format!(
            "{:04x}:{bus:02x}:{slot:02x}.{func:x}",
            f("domain").unwrap_or(0)
        );
        let dir = self.host("sys/bus/pci/devices").join(&addr);
        let rd = std::fs::read_dir(&dir).map_err(|e| {
            self.err(
                origin,
                format!(
                    "PCI device {addr} is not present on this host ({}: {e}); check the \
                     address with `lspci -D`",
                    dir.display()
                ),
            )
        })?;
        let o = format!("{origin} {addr}");
        let mut files: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                matches!(n.as_str(), "config" | "rom" | "vendor" | "device" | "reset")
                    || n.strip_prefix("resource").is_some_and(|r| {
                        r.is_empty()
                            || r.trim_end_matches("_wc")
                                .chars()
                                .all(|c| c.is_ascii_digit())
                    })
            })
            .collect();
        files.sort();
        for n in files {
            self.file(dir.join(n), Access::RW, o.clone());
        }
        if vfio {
            self.vfio_group(&dir, &o)?;
        }
        Ok(())
    }

    /// Grant the device's own IOMMU group, `/dev/vfio/<its group>`, never
    /// any other.
    fn vfio_group(&mut self, dir: &Path, origin: &str) -> Result<(), DomainError> {
        let g = self.iommu_group(dir, origin)?;
        self.file(
            format!("/dev/vfio/{g}"),
            Access::RW,
            format!("{origin}, IOMMU group {g}"),
        );
        Ok(())
    }

    /// The IOMMU group number of a sysfs device directory.
    fn iommu_group(&self, dir: &Path, origin: &str) -> Result<String, DomainError> {
        let link: PathBuf = std::fs::read_link(dir.join("iommu_group")).map_err(|e| {
            self.err(
                origin,
                format!(
                    "{} has no IOMMU group ({e}): VFIO needs the IOMMU enabled \
                     (intel_iommu=on or amd_iommu=on on the kernel command line)",
                    dir.display()
                ),
            )
        })?;
        link.file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
            .ok_or_else(|| {
                self.err(
                    origin,
                    format!("unexpected IOMMU group link {}", link.display()),
                )
            })
    }

    fn mdev(&mut self, src: Option<Node<'_, '_>>, origin: &str) -> Result<(), DomainError> {
        let Some(uuid) = src
            .and_then(|s| child(s, "address"))
            .and_then(|a| attr(a, "uuid"))
        else {
            return Err(self.err(origin, "mediated device without <address uuid=…>"));
        };
        if uuid.contains('/') || uuid.starts_with('.') {
            return Err(self.err(origin, format!("invalid mediated device uuid {uuid:?}")));
        }
        let dir = self.host("sys/bus/mdev/devices").join(uuid);
        if !dir.exists() {
            return Err(self.err(
                origin,
                format!(
                    "mediated device {uuid} does not exist on this host (no {}); create it \
                     first (mdevctl start)",
                    dir.display()
                ),
            ));
        }
        self.vfio_group(&dir, &format!("{origin} (mdev {uuid})"))
    }

    fn scsi(
        &mut self,
        hd: Node<'_, '_>,
        src: Option<Node<'_, '_>>,
        origin: &str,
    ) -> Result<(), DomainError> {
        if let Some(p) = src.and_then(|s| s.attribute("protocol")) {
            self.g.skip(
                format!("{origin} (scsi {p})"),
                format!("{p} SCSI host device: QEMU reaches it over the network, no host file"),
            );
            return Ok(());
        }
        let host = src
            .and_then(|s| child(s, "adapter"))
            .and_then(|a| attr(a, "name"))
            .and_then(|n| n.strip_prefix("scsi_host"))
            .and_then(num);
        let a = src.and_then(|s| child(s, "address"));
        let f = |n: &str| a.and_then(|a| attr(a, n)).and_then(num);
        let (Some(h), Some(b), Some(t), Some(u)) = (host, f("bus"), f("target"), f("unit")) else {
            return Err(self.err(
                origin,
                "SCSI host device needs <adapter name='scsi_hostN'/> and <address bus target unit>",
            ));
        };
        let hbtu = format!("{h}:{b}:{t}:{u}");
        let dir = self
            .host("sys/bus/scsi/devices")
            .join(&hbtu)
            .join("scsi_generic");
        let sg = std::fs::read_dir(&dir)
            .ok()
            .and_then(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .find(|n| {
                        n.strip_prefix("sg")
                            .is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
                    })
            })
            .ok_or_else(|| {
                self.err(
                    origin,
                    format!(
                        "SCSI device {hbtu} is not present on this host or has no SCSI generic \
                         node (nothing in {}); check it with `lsscsi -g`",
                        dir.display()
                    ),
                )
            })?;
        let access = if child(hd, "readonly").is_some() {
            Access::R
        } else {
            Access::RW
        };
        self.file(
            format!("/dev/{sg}"),
            access,
            format!("{origin} (scsi {hbtu})"),
        );
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::testutil::*;
    use super::super::ReadOptions;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    /// A fake host: two USB devices, a PCI device in IOMMU group 14 next to
    /// group 15, an mdev in group 21, and a SCSI disk at 2:0:0:3 as sg5.
    pub(crate) fn fake_sysfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for (dev, v, p, b, n) in [
            ("1-1", "046d", "c52b", "1", "4"),
            ("2-3", "0781", "5581", "2", "17"),
            ("usb1", "1d6b", "0002", "1", "1"),
        ] {
            let dd = r.join("sys/devices/pci0000:00/usb").join(dev);
            write(&dd.join("idVendor"), &format!("{v}\n"));
            write(&dd.join("idProduct"), &format!("{p}\n"));
            write(&dd.join("busnum"), &format!("{b}\n"));
            write(&dd.join("devnum"), &format!("{n}\n"));
            std::fs::create_dir_all(r.join("sys/bus/usb/devices")).unwrap();
            symlink(&dd, r.join("sys/bus/usb/devices").join(dev)).unwrap();
        }
        for g in ["14", "15", "21"] {
            std::fs::create_dir_all(r.join("sys/kernel/iommu_groups").join(g)).unwrap();
        }
        let pd = r.join("sys/devices/pci0000:00/0000:00:02.0/0000:06:12.5");
        for f in [
            "config",
            "resource",
            "resource0",
            "resource2_wc",
            "rom",
            "vendor",
            "device",
            "reset",
            "uevent",
            "remove",
        ] {
            write(&pd.join(f), "");
        }
        symlink(r.join("sys/kernel/iommu_groups/14"), pd.join("iommu_group")).unwrap();
        std::fs::create_dir_all(r.join("sys/bus/pci/devices")).unwrap();
        symlink(&pd, r.join("sys/bus/pci/devices/0000:06:12.5")).unwrap();
        let md = r.join("sys/devices/pci0000:00/0000:00:02.0/53764d0e-85a0-42b4-af5c-2046b460b1dc");
        std::fs::create_dir_all(&md).unwrap();
        symlink(r.join("sys/kernel/iommu_groups/21"), md.join("iommu_group")).unwrap();
        std::fs::create_dir_all(r.join("sys/bus/mdev/devices")).unwrap();
        symlink(
            &md,
            r.join("sys/bus/mdev/devices/53764d0e-85a0-42b4-af5c-2046b460b1dc"),
        )
        .unwrap();
        std::fs::create_dir_all(r.join("sys/bus/scsi/devices/2:0:0:3/scsi_generic/sg5")).unwrap();
        d
    }

    pub(crate) fn opts(root: &Path) -> ReadOptions {
        ReadOptions {
            sysfs_root: root.to_path_buf(),
            ..ReadOptions::default()
        }
    }

    fn host_guest(d: &tempfile::TempDir, devices: &str) -> crate::guest::Guest {
        try_guest("", devices, "", &opts(d.path())).unwrap()
    }

    fn host_err(d: &tempfile::TempDir, devices: &str) -> String {
        try_guest("", devices, "", &opts(d.path()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn usb_by_address_and_by_vendor_product() {
        let d = fake_sysfs();
        let g = try_guest(
            "",
            "<hostdev mode='subsystem' type='usb'><source><address bus='2' device='17'/></source></hostdev>\
             <hostdev mode='subsystem' type='usb'><source><vendor id='0x046d'/><product id='0xc52b'/></source></hostdev>",
            "",
            &opts(d.path()),
        )
        .unwrap();
        assert_eq!(
            g.resources,
            vec![
                f("/dev/bus/usb/002/017", "rw", "hostdev0 (usb)"),
                f("/dev/bus/usb/001/004", "rw", "hostdev1 (usb)"),
            ]
        );
    }

    #[test]
    fn absent_usb_is_an_error_unless_optional() {
        let d = fake_sysfs();
        let e = host_err(&d, "<hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/><product id='0xbeef'/></source></hostdev>");
        assert!(
            e.contains("guest vm1: hostdev0: USB device 1234:beef is not attached"),
            "{e}"
        );
        assert!(e.contains("startupPolicy='optional'"), "{e}");
        let g = host_guest(&d, "<hostdev mode='subsystem' type='usb'><source startupPolicy='optional'><vendor id='0x1234'/><product id='0xbeef'/></source></hostdev>");
        assert!(g.resources.is_empty());
        assert_eq!(skips(&g)[0].0, "hostdev0 (usb)");
        assert!(skips(&g)[0].1.contains("not attached to this host"));
    }

    #[test]
    fn pci_gets_its_sysfs_files_and_only_its_own_group() {
        let d = fake_sysfs();
        let g = try_guest(
            "",
            "<hostdev mode='subsystem' type='pci' managed='yes'><driver name='vfio'/>\
             <source><address domain='0x0000' bus='0x06' slot='0x12' function='0x5'/></source></hostdev>",
            "",
            &opts(d.path()),
        )
        .unwrap();
        let dev = d.path().join("sys/bus/pci/devices/0000:06:12.5");
        let o = "hostdev0 (pci) 0000:06:12.5";
        let mut want: Vec<_> = [
            "config",
            "device",
            "reset",
            "resource",
            "resource0",
            "resource2_wc",
            "rom",
            "vendor",
        ]
        .iter()
        .map(|n| f(dev.join(n).to_str().unwrap(), "rw", o))
        .collect();
        want.push(f(
            "/dev/vfio/14",
            "rw",
            "hostdev0 (pci) 0000:06:12.5, IOMMU group 14",
        ));
        assert_eq!(g.resources, want);
        let e = host_err(&d, "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='7' slot='0' function='0'/></source></hostdev>");
        assert!(
            e.contains("PCI device 0000:07:00.0 is not present on this host"),
            "{e}"
        );
    }

    #[test]
    fn sriov_interface_is_a_pci_device() {
        let d = fake_sysfs();
        let g = host_guest(&d, "<interface type='hostdev' managed='yes'><source><address type='pci' domain='0x0000' bus='0x06' slot='0x12' function='0x5'/></source></interface>");
        assert_eq!(
            g.resources.last().unwrap(),
            &f(
                "/dev/vfio/14",
                "rw",
                "interface0 (hostdev) 0000:06:12.5, IOMMU group 14"
            )
        );
    }

    #[test]
    fn mdev_scsi_and_vhost_scsi() {
        let d = fake_sysfs();
        let g = try_guest(
            "",
            "<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='53764d0e-85a0-42b4-af5c-2046b460b1dc'/></source></hostdev>\
             <hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host2'/><address bus='0' target='0' unit='3'/></source></hostdev>\
             <hostdev mode='subsystem' type='scsi_host'><source protocol='vhost' wwpn='naa.5123456789abcde0'/></hostdev>\
             <hostdev mode='subsystem' type='scsi'><source protocol='iscsi' name='iqn.x/0'><host name='h'/></source></hostdev>",
            "",
            &opts(d.path()),
        )
        .unwrap();
        assert_eq!(
            g.resources,
            vec![
                f(
                    "/dev/vfio/21",
                    "rw",
                    "hostdev0 (mdev 53764d0e-85a0-42b4-af5c-2046b460b1dc), IOMMU group 21"
                ),
                f("/dev/sg5", "rw", "hostdev1 (scsi 2:0:0:3)"),
                f("/dev/vhost-scsi", "rw", "hostdev2 (vhost-scsi)"),
            ]
        );
        assert_eq!(skips(&g)[0].0, "hostdev3 (scsi iscsi)");
        let e = host_err(&d, "<hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host0'/><address bus='0' target='0' unit='0'/></source></hostdev>");
        assert!(e.contains("SCSI device 0:0:0:0 is not present"), "{e}");
        let e = host_err(&d, "<hostdev mode='subsystem' type='mdev'><source><address uuid='00000000-0000-0000-0000-000000000000'/></source></hostdev>");
        assert!(e.contains("does not exist on this host"), "{e}");
    }
}
