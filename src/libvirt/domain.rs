//! libvirt domain XML to [`Guest`]: every host path a QEMU domain uses.
//!
//! One function per device family; each records the device it came from
//! (`disk vda, backing layer 2`) so rules can be explained, and records the
//! devices that deliberately get no rule, with the reason.

use std::path::PathBuf;

use roxmltree::{Document, Node, ParsingOptions};
use uuid::Uuid;

use crate::guest::{Access, Guest, GuestKind, Resource};

/// Largest domain XML accepted (libvirt's own cap is 10 MB).
pub const MAX_XML_BYTES: usize = 16 * 1024 * 1024;

/// Domain XML errors; each names the guest when it is known.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// Input over [`MAX_XML_BYTES`].
    #[error("domain XML is {0} bytes, over the limit of {MAX_XML_BYTES}")]
    TooLarge(usize),
    /// Not well-formed XML (or uses a DTD, which is refused).
    #[error("domain XML does not parse: {0}")]
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
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Read backing chains from image headers when the XML has no
    /// `<backingStore>` and the format is declared.
    pub probe_chains: bool,
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
    let uuid = child_text(root, "uuid").ok_or(DomainError::Missing {
        guest: name.clone(),
        what: "<uuid>",
    })?;
    g.uuid = Some(
        Uuid::parse_str(uuid.trim()).map_err(|_| DomainError::BadUuid {
            guest: name.clone(),
            value: uuid.to_string(),
        })?,
    );
    g.id = root
        .attribute("id")
        .and_then(|i| i.parse().ok())
        .filter(|&i: &i64| i >= 0);
    g.driver = root.attribute("type").unwrap_or("").to_string();
    let mut r = Reader { g, opts };
    if let Some(devices) = child(root, "devices") {
        if let Some(e) = child_text(devices, "emulator") {
            r.g.emulator = Some(PathBuf::from(e.trim()));
        }
        for dev in devices.children().filter(Node::is_element) {
            r.device(dev)?;
        }
    }
    Ok(r.g)
}

struct Reader<'o> {
    g: Guest,
    opts: &'o ReadOptions,
}

impl Reader<'_> {
    fn device(&mut self, dev: Node<'_, '_>) -> Result<(), DomainError> {
        match dev.tag_name().name() {
            "disk" => self.disk(dev),
            _ => Ok(()),
        }
    }

    fn err(&self, origin: &str, reason: impl Into<String>) -> DomainError {
        DomainError::Device {
            guest: self.g.name.clone(),
            origin: origin.into(),
            reason: reason.into(),
        }
    }

    fn disk(&mut self, disk: Node<'_, '_>) -> Result<(), DomainError> {
        let target = child(disk, "target")
            .and_then(|t| t.attribute("dev"))
            .unwrap_or("?");
        let origin = format!("disk {target}");
        let readonly = child(disk, "readonly").is_some();
        let top = if readonly { Access::RK } else { Access::RWK };
        let ty = disk.attribute("type").unwrap_or("file");
        let Some(path) = local_source(disk, ty) else {
            let why = match ty {
                "network" => "network disk: QEMU talks to it over a socket, no file rule",
                "volume" => "storage-pool volume not translated to a path: libvirt passes the path when it starts the guest",
                "nvme" => "NVMe disk: libvirt labels its /dev/vfio group at start",
                "vhostuser" => "vhost-user disk: libvirt labels the socket at start",
                "vhostvdpa" => "vhost-vdpa disk: libvirt hands QEMU a descriptor",
                _ => "no source (empty drive)",
            };
            self.g.skip(origin, why);
            return Ok(());
        };
        self.g.add(Resource::file(&path, top, origin.clone()));
        if let Some(ds) = child(disk, "source").and_then(|s| child(s, "dataStore")) {
            if let Some(p) =
                child(ds, "source").and_then(|s| s.attribute("file").or(s.attribute("dev")))
            {
                self.g
                    .add(Resource::file(p, top, format!("{origin}, data file")));
            }
        }
        match child(disk, "backingStore") {
            Some(bs) => self.backing_from_xml(bs, &origin, 1)?,
            None if self.opts.probe_chains => {
                let fmt = child(disk, "driver").and_then(|d| d.attribute("type"));
                self.backing_from_headers(&path, fmt, &origin)?;
            }
            None => {}
        }
        Ok(())
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
            if depth > super::image::MAX_CHAIN_DEPTH {
                return Err(self.err(
                    origin,
                    format!(
                        "backing chain deeper than {} layers",
                        super::image::MAX_CHAIN_DEPTH
                    ),
                ));
            }
            match local_source(bs, ty) {
                Some(p) => self.g.add(Resource::file(
                    p,
                    Access::RK,
                    format!("{origin}, backing layer {depth}"),
                )),
                None => self.g.skip(
                    format!("{origin}, backing layer {depth}"),
                    format!("{ty} backing store: no local file"),
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
        let chain = super::image::chain(std::path::Path::new(top), fmt)
            .map_err(|e| self.err(origin, e.to_string()))?;
        for (i, layer) in chain.into_iter().enumerate() {
            self.g.add(Resource::file(
                layer.path,
                Access::RK,
                format!("{origin}, backing layer {}", i + 1),
            ));
        }
        Ok(())
    }
}

/// The local path of a disk-like element's `<source>`, if it has one.
fn local_source(n: Node<'_, '_>, ty: &str) -> Option<String> {
    let src = child(n, "source")?;
    let attr = match ty {
        "file" => "file",
        "block" => "dev",
        "dir" => "dir",
        _ => return None,
    };
    src.attribute(attr)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// First child element with this local name.
pub(crate) fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// Text of the first child element with this name.
pub(crate) fn child_text<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(n, name).and_then(|c| c.text())
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
