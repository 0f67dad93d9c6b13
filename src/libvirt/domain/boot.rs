//! Firmware and boot files: `<os>` (loader, nvram, kernel, initrd, dtb,
//! shim, ACPI tables), `<sysinfo type='fwcfg'>` files and `<pstore>`.

use std::path::Path;

use roxmltree::Node;

use super::{attr, child, child_path, children, yes, DomainError, Reader};
use crate::guest::Access;
use crate::policy::paths::{is_firmware_dir, resolve};

/// Where libvirt keeps per-guest UEFI variable stores by default.
pub const NVRAM_DIR: &str = "/var/lib/libvirt/qemu/nvram";

impl Reader<'_> {
    /// `<os>`: the loader (`rk` when read-only, `rwk` when writable), the
    /// NVRAM store (`rwk`), and the kernel, initrd, dtb, shim and ACPI
    /// tables QEMU reads (`r`).
    pub(crate) fn os(&mut self, os: Node<'_, '_>) -> Result<(), DomainError> {
        let loader = child(os, "loader");
        if let Some(l) = loader {
            self.loader(l);
        }
        self.nvram(os, loader);
        for (el, origin) in [
            ("kernel", "kernel"),
            ("initrd", "initrd"),
            ("dtb", "device tree (dtb)"),
            ("shim", "shim"),
        ] {
            if let Some(p) = child_path(os, el) {
                self.file(p, Access::R, origin);
            }
        }
        if let Some(acpi) = child(os, "acpi") {
            for (i, t) in children(acpi, "table").enumerate() {
                if let Some(p) = t.text().map(str::trim).filter(|s| !s.is_empty()) {
                    let ty = t.attribute("type").unwrap_or("?");
                    self.file(p, Access::R, format!("ACPI table {i} ({ty})"));
                }
            }
        }
        Ok(())
    }

    fn loader(&mut self, l: Node<'_, '_>) {
        let Some(path) = l.text().map(str::trim).filter(|s| !s.is_empty()) else {
            self.g.skip(
                "loader",
                "no firmware path in the XML: libvirt picks the firmware when the guest \
                 starts, and the XML it then hands over names it",
            );
            return;
        };
        let readonly = match yes(l, "readonly") {
            Some(ro) => ro,
            // A ROM is never written. Otherwise libvirt defaults to a
            // writable loader, which QEMU cannot get in a firmware directory
            // anyway: treat those as read-only rather than refuse the guest.
            None => {
                l.attribute("type") == Some("rom") || {
                    let p = Path::new(path);
                    is_firmware_dir(&resolve(p).unwrap_or_else(|_| p.to_path_buf()))
                }
            }
        };
        if readonly {
            self.file(path, Access::RK, "loader (read-only)");
        } else {
            self.file(path, Access::RWK, "loader (writable)");
        }
    }

    /// `<nvram>`: a file, block device or (skipped) network store. With no
    /// path, libvirt uses `NVRAM_DIR/<name>_VARS.<fd|qcow2>` for a pflash
    /// loader that keeps state.
    fn nvram(&mut self, os: Node<'_, '_>, loader: Option<Node<'_, '_>>) {
        let nv = child(os, "nvram");
        if let Some(n) = nv {
            match n.attribute("type") {
                Some("network") => {
                    self.g.skip(
                        "nvram",
                        "network NVRAM store: QEMU reaches it over the network, no host file",
                    );
                    return;
                }
                Some("file") | Some("block") => {
                    let a = if n.attribute("type") == Some("file") {
                        "file"
                    } else {
                        "dev"
                    };
                    if let Some(p) = child(n, "source").and_then(|s| attr(s, a)) {
                        self.file(p, Access::RWK, "nvram");
                        return;
                    }
                }
                _ => {
                    if let Some(p) = n.text().map(str::trim).filter(|s| !s.is_empty()) {
                        self.file(p, Access::RWK, "nvram");
                        return;
                    }
                }
            }
        }
        let stateful_pflash = loader.is_some_and(|l| {
            l.attribute("type") == Some("pflash")
                && yes(l, "stateless") != Some(true)
                && yes(l, "readonly") == Some(true)
        });
        if nv.is_some() || stateful_pflash {
            let ext = match nv.and_then(|n| n.attribute("format")) {
                Some("qcow2") => "qcow2",
                _ => "fd",
            };
            let p = Path::new(NVRAM_DIR).join(format!("{}_VARS.{ext}", self.g.name));
            self.file(p, Access::RWK, "nvram (libvirt's default path)");
        }
    }

    /// `<sysinfo type='fwcfg'>` entries that name a file: QEMU reads it.
    pub(crate) fn sysinfo(&mut self, si: Node<'_, '_>) {
        if si.attribute("type") != Some("fwcfg") {
            return;
        }
        for e in children(si, "entry") {
            if let Some(p) = attr(e, "file") {
                let name = e.attribute("name").unwrap_or("?");
                self.file(p, Access::R, format!("fw_cfg entry {name}"));
            }
        }
    }

    /// `<pstore>`: the persistent store's backing file.
    pub(crate) fn pstore(&mut self, ps: Node<'_, '_>) {
        if let Some(p) = child_path(ps, "path") {
            self.file(p, Access::RW, "pstore");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn loader_access_by_readonly_attribute_and_place() {
        let g = guest(
            "<loader readonly='yes' type='pflash'>/srv/fw/CODE.fd</loader><nvram>/srv/fw/vm1_VARS.fd</nvram>",
            "",
            "",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/srv/fw/CODE.fd", "rk", "loader (read-only)"),
                f("/srv/fw/vm1_VARS.fd", "rwk", "nvram"),
            ]
        );
        let g = guest(
            "<loader readonly='no' type='pflash'>/srv/fw/BOTH.fd</loader>",
            "",
            "",
        );
        assert_eq!(
            g.resources,
            vec![f("/srv/fw/BOTH.fd", "rwk", "loader (writable)")]
        );
        // No attribute: writable outside the firmware directories...
        let g = guest("<loader type='pflash'>/srv/fw/BOTH.fd</loader>", "", "");
        assert_eq!(
            g.resources,
            vec![f("/srv/fw/BOTH.fd", "rwk", "loader (writable)")]
        );
        // ... and read-only inside them (libvirt's bug #9 would refuse the guest).
        let g = guest("<loader>/usr/share/seabios/bios.bin</loader>", "", "");
        assert_eq!(
            g.resources,
            vec![f("/usr/share/seabios/bios.bin", "rk", "loader (read-only)")]
        );
        let g = guest("<loader type='rom'>/srv/rom.bin</loader>", "", "");
        assert_eq!(
            g.resources,
            vec![f("/srv/rom.bin", "rk", "loader (read-only)")]
        );
    }

    #[test]
    fn nvram_forms() {
        let g = guest(
            "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\
             <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'/>",
            "",
            "",
        );
        assert_eq!(
            g.resources[1],
            f(
                "/var/lib/libvirt/qemu/nvram/vm1_VARS.fd",
                "rwk",
                "nvram (libvirt's default path)"
            )
        );
        let g = guest(
            "<nvram type='file' format='qcow2'><source file='/srv/v.qcow2'/></nvram>",
            "",
            "",
        );
        assert_eq!(g.resources, vec![f("/srv/v.qcow2", "rwk", "nvram")]);
        let g = guest(
            "<nvram type='network'><source protocol='iscsi' name='x'/></nvram>",
            "",
            "",
        );
        assert!(g.resources.is_empty());
        assert_eq!(skips(&g)[0].0, "nvram");
        let g = guest("<loader format='qcow2'/>", "", "");
        assert!(skips(&g)[0].1.contains("libvirt picks the firmware"));
    }

    #[test]
    fn boot_files_acpi_fwcfg_pstore() {
        let g = guest(
            "<kernel>/srv/vmlinuz</kernel><initrd>/srv/initrd</initrd><dtb>/srv/b.dtb</dtb>\
             <shim>/srv/shim.efi</shim><acpi><table type='slic'>/srv/slic.dat</table></acpi>",
            "<pstore backend='acpi-erst'><path>/srv/erst</path><size unit='KiB'>8</size></pstore>",
            "<sysinfo type='fwcfg'><entry name='opt/com.coreos/config' file='/srv/p.ign'/>\
             <entry name='opt/x'>inline</entry></sysinfo>",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/srv/vmlinuz", "r", "kernel"),
                f("/srv/initrd", "r", "initrd"),
                f("/srv/b.dtb", "r", "device tree (dtb)"),
                f("/srv/shim.efi", "r", "shim"),
                f("/srv/slic.dat", "r", "ACPI table 0 (slic)"),
                f("/srv/p.ign", "r", "fw_cfg entry opt/com.coreos/config"),
                f("/srv/erst", "rw", "pstore"),
            ]
        );
    }
}
