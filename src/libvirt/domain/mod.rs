//! libvirt domain XML to [`Guest`]: every host path a QEMU domain uses.
//!
//! One submodule per device family (`disk`, `boot`, `chardev`, `hostdev`,
//! `fs`, `devices`, `cmdline`); each records the device a path comes from
//! (`disk vda, backing layer 2`) so rules can be explained, and records the
//! devices that deliberately get no rule, with the reason.
//!
//! How each element maps to host paths follows what libvirt and QEMU
//! actually open; where Debian's `virt-aa-helper` differs on purpose, the
//! difference is listed with its reason in `tests/deliberate-differences.tsv`.

use std::collections::HashMap;
use std::path::PathBuf;

use roxmltree::{Document, Node, ParsingOptions};
use uuid::Uuid;

use crate::guest::{Access, Guest, GuestKind, Resource};

mod boot;
mod chardev;
mod cmdline;
mod devices;
mod disk;
mod fs;
mod hostdev;
#[cfg(test)]
pub(crate) mod testutil;

/// Largest domain XML accepted (libvirt's own cap is 10 MB).
pub const MAX_XML_BYTES: usize = 16 * 1024 * 1024;

/// Domain XML errors; each names the guest when it is known.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// Input over [`MAX_XML_BYTES`].
    #[error("domain XML is {0} bytes, over the limit of {MAX_XML_BYTES}")]
    TooLarge(usize),
    /// Not well-formed XML (or uses a DTD, which is refused).
    #[error("domain XML does not parse: {}", crate::policy::escape::display_bytes(.0.to_string().as_bytes()))]
    Xml(#[from] roxmltree::Error),
    /// The root element is not `<domain>`.
    #[error("not a libvirt domain: root element is <{0}>")]
    NotADomain(String),
    /// A required element is missing.
    #[error("guest {guest}: domain XML has no {what}")]
    Missing {
        /// Guest name, or `?`.
        guest: String,
        /// What is missing.
        what: &'static str,
    },
    /// The UUID does not parse.
    #[error("guest {guest}: invalid uuid {value:?}")]
    BadUuid {
        /// Guest name.
        guest: String,
        /// The value.
        value: String,
    },
    /// A device is described in a way we cannot confine.
    #[error("guest {guest}: {origin}: {reason}")]
    Device {
        /// Guest name.
        guest: String,
        /// Device.
        origin: String,
        /// What is wrong.
        reason: String,
    },
}

/// Options for reading a domain.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Read backing chains from image headers when the XML has no
    /// `<backingStore>` and the format is declared.
    pub probe_chains: bool,
    /// The root under which the host's `/sys` (and `/proc/mounts`) are read
    /// to find host devices: USB bus numbers, PCI sysfs files and IOMMU
    /// groups, SCSI generic nodes, render nodes and hugetlbfs mounts.
    /// `/` on a real host; tests point it at a fake tree.
    pub sysfs_root: PathBuf,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            probe_chains: false,
            sysfs_root: PathBuf::from("/"),
        }
    }
}

/// Read a whole domain XML input (a file, or `-` for standard input),
/// bounded by [`MAX_XML_BYTES`]. Errors name the source and say what is
/// wrong with it (cannot open, too large, not UTF-8).
pub fn read_input(src: &str) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let limit = MAX_XML_BYTES as u64 + 1;
    let mut buf = Vec::new();
    if src == "-" {
        std::io::stdin().take(limit).read_to_end(&mut buf)?;
    } else {
        std::fs::File::open(src)
            .map_err(|e| Error::new(e.kind(), format!("cannot open {src}: {e}")))?
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(|e| Error::new(e.kind(), format!("cannot read {src}: {e}")))?;
    }
    if buf.len() as u64 >= limit {
        return Err(Error::new(
            ErrorKind::InvalidData,
            DomainError::TooLarge(buf.len()),
        ));
    }
    String::from_utf8(buf).map_err(|_| {
        Error::new(
            ErrorKind::InvalidData,
            format!("{src}: domain XML is not valid UTF-8"),
        )
    })
}

/// Parse domain XML into a guest.
pub fn parse(xml: &str, opts: &ReadOptions) -> Result<Guest, DomainError> {
    if xml.len() > MAX_XML_BYTES {
        return Err(DomainError::TooLarge(xml.len()));
    }
    let doc = Document::parse_with_options(
        xml,
        ParsingOptions {
            allow_dtd: false,
            ..ParsingOptions::default()
        },
    )?;
    let root = doc.root_element();
    if root.tag_name().name() != "domain" {
        return Err(DomainError::NotADomain(root.tag_name().name().to_string()));
    }
    let name = child_text(root, "name").unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(DomainError::Missing {
            guest: "?".into(),
            what: "<name>",
        });
    }
    let mut g = Guest::new(GuestKind::Qemu, name.clone());
    // Messages show the name with control characters escaped: one line.
    let shown = crate::policy::escape::display_bytes(name.as_bytes());
    let uuid = child_text(root, "uuid").ok_or(DomainError::Missing {
        guest: shown.clone(),
        what: "<uuid>",
    })?;
    g.uuid = Some(
        Uuid::parse_str(uuid.trim()).map_err(|_| DomainError::BadUuid {
            guest: shown.clone(),
            value: uuid.to_string(),
        })?,
    );
    g.id = root
        .attribute("id")
        .and_then(|i| i.parse().ok())
        .filter(|&i: &i64| i >= 0);
    g.driver = root.attribute("type").unwrap_or("").to_string();
    let mut r = Reader {
        g,
        opts,
        counts: HashMap::new(),
    };
    r.domain(root)?;
    Ok(r.g)
}

/// Walks one domain and fills in its guest. The device families live in
/// the submodules, one `impl Reader` each.
pub(crate) struct Reader<'o> {
    pub(crate) g: Guest,
    pub(crate) opts: &'o ReadOptions,
    /// Per-element-kind counters, for origins such as `serial1`.
    counts: HashMap<&'static str, usize>,
}

impl Reader<'_> {
    fn domain(&mut self, root: Node<'_, '_>) -> Result<(), DomainError> {
        if let Some(os) = child(root, "os") {
            self.os(os)?;
        }
        for si in children(root, "sysinfo") {
            self.sysinfo(si);
        }
        if let Some(mb) = child(root, "memoryBacking") {
            self.memory_backing(mb, root)?;
        }
        if let Some(ls) = child(root, "launchSecurity") {
            self.launch_security(ls);
        }
        if let Some(devices) = child(root, "devices") {
            if let Some(e) = child_text(devices, "emulator") {
                self.g.emulator = Some(PathBuf::from(e.trim()));
            }
            let serials: Vec<Node<'_, '_>> = children(devices, "serial").collect();
            for dev in devices.children().filter(Node::is_element) {
                self.device(dev, &serials)?;
            }
        }
        for cl in root.children().filter(|c| {
            c.is_element()
                && c.tag_name().name() == "commandline"
                && c.tag_name().namespace() == Some(QEMU_NS)
        }) {
            self.qemu_commandline(cl);
        }
        Ok(())
    }

    fn device(&mut self, dev: Node<'_, '_>, serials: &[Node<'_, '_>]) -> Result<(), DomainError> {
        match dev.tag_name().name() {
            "disk" => self.disk(dev),
            "serial" | "parallel" | "channel" | "console" => {
                self.chardev_device(dev, serials);
                Ok(())
            }
            "hostdev" => self.hostdev(dev),
            "filesystem" => {
                self.filesystem(dev);
                Ok(())
            }
            "tpm" => {
                self.tpm(dev);
                Ok(())
            }
            "shmem" => {
                self.shmem(dev);
                Ok(())
            }
            "input" => {
                self.input(dev);
                Ok(())
            }
            "interface" => self.interface(dev),
            "memory" => {
                self.memory_device(dev);
                Ok(())
            }
            "graphics" => self.graphics(dev),
            "video" => self.video(dev),
            "smartcard" => {
                self.smartcard(dev);
                Ok(())
            }
            "audio" => {
                self.audio(dev);
                Ok(())
            }
            "rng" => {
                self.rng(dev);
                Ok(())
            }
            "redirdev" => {
                let origin = self.next_origin("redirdev");
                self.chardev_source(dev, &origin);
                Ok(())
            }
            "pstore" => {
                self.pstore(dev);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `serial0`, `serial1`, ...: the next origin name for an element kind.
    pub(crate) fn next_origin(&mut self, kind: &'static str) -> String {
        let n = self.counts.entry(kind).or_insert(0);
        let o = format!("{kind}{n}");
        *n += 1;
        o
    }

    /// A device error naming this guest.
    pub(crate) fn err(&self, origin: &str, reason: impl Into<String>) -> DomainError {
        DomainError::Device {
            guest: crate::policy::escape::display_bytes(self.g.name.as_bytes()),
            origin: crate::policy::escape::display_bytes(origin.as_bytes()),
            reason: crate::policy::escape::display_bytes(reason.into().as_bytes()),
        }
    }

    /// Add a single-file resource.
    pub(crate) fn file(
        &mut self,
        path: impl Into<PathBuf>,
        access: Access,
        origin: impl Into<String>,
    ) {
        self.g.add(Resource::file(path, access, origin));
    }

    /// Add a directory-tree resource.
    pub(crate) fn tree(
        &mut self,
        path: impl Into<PathBuf>,
        access: Access,
        origin: impl Into<String>,
    ) {
        self.g.add(Resource::tree(path, access, origin));
    }

    /// A host path below [`ReadOptions::sysfs_root`] (`rel` has no leading `/`).
    pub(crate) fn host(&self, rel: &str) -> PathBuf {
        self.opts.sysfs_root.join(rel.trim_start_matches('/'))
    }
}

/// libvirt's namespace for `<qemu:commandline>`.
pub const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// First child element with this local name.
pub(crate) fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// Every child element with this local name.
pub(crate) fn children<'a, 'i: 'a>(
    n: Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// Text of the first child element with this name.
pub(crate) fn child_text<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(n, name).and_then(|c| c.text())
}

/// Trimmed, non-empty text of the first child element with this name.
pub(crate) fn child_path<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child_text(n, name).map(str::trim).filter(|s| !s.is_empty())
}

/// A non-empty attribute.
pub(crate) fn attr<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
    n.attribute(name).filter(|s| !s.is_empty())
}

/// A `yes`/`on` attribute.
pub(crate) fn yes(n: Node<'_, '_>, name: &str) -> Option<bool> {
    n.attribute(name).map(|v| matches!(v, "yes" | "on"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<domain type='kvm' id='3'>
  <name>vm1</name>
  <uuid>12345678-1234-1234-1234-123456789abc</uuid>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/top.qcow2'/>
      <backingStore type='file' index='1'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/base.qcow2'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='nbd' name='x'><host name='h'/></source>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'><target dev='sda'/><readonly/></disk>
  </devices>
</domain>"#;

    #[test]
    fn reads_identity_and_disks() {
        let g = parse(XML, &ReadOptions::default()).unwrap();
        assert_eq!(g.name, "vm1");
        assert_eq!(g.id, Some(3));
        assert_eq!(g.driver, "kvm");
        assert_eq!(g.resources.len(), 2);
        assert_eq!(g.resources[0].access, Access::RWK);
        assert_eq!(g.resources[1].access, Access::RK);
        assert_eq!(g.resources[1].origin, "disk vda, backing layer 1");
        assert_eq!(g.skipped.len(), 2);
        assert!(g.skipped[0].reason.contains("network"));
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse("<domain>", &ReadOptions::default()),
            Err(DomainError::Xml(_))
        ));
        assert!(matches!(
            parse("<domain><name>x</name></domain>", &ReadOptions::default()),
            Err(DomainError::Missing { what: "<uuid>", .. })
        ));
        assert!(matches!(
            parse(
                "<domain><name>x</name><uuid>nope</uuid></domain>",
                &ReadOptions::default()
            ),
            Err(DomainError::BadUuid { .. })
        ));
        let dtd = "<!DOCTYPE d [<!ENTITY a \"aaaa\">]><domain><name>&a;</name></domain>";
        assert!(parse(dtd, &ReadOptions::default()).is_err());
        let big = "x".repeat(MAX_XML_BYTES + 1);
        assert!(matches!(
            parse(&big, &ReadOptions::default()),
            Err(DomainError::TooLarge(_))
        ));
    }
}
