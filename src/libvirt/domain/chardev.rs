//! Character devices: serial, parallel, console and channel, and the
//! chardev backends other devices use (redirdev, smartcard passthrough, rng
//! egd, external TPM).

use roxmltree::Node;

use super::{attr, child, children, Reader};
use crate::guest::Access;

impl Reader<'_> {
    /// `<serial>`, `<parallel>`, `<channel>`, `<console>`. A console that
    /// stands for a serial port (target type `serial`, or none) is the same
    /// chardev as that serial port and adds nothing.
    pub(crate) fn chardev_device(&mut self, dev: Node<'_, '_>, serials: &[Node<'_, '_>]) {
        let kind: &'static str = match dev.tag_name().name() {
            "serial" => "serial",
            "parallel" => "parallel",
            "channel" => "channel",
            _ => "console",
        };
        let mut origin = self.next_origin(kind);
        if kind == "console" {
            let target = child(dev, "target");
            let ttype = target.and_then(|t| t.attribute("type"));
            let port = target.and_then(|t| t.attribute("port")).unwrap_or("0");
            if matches!(ttype, None | Some("serial")) {
                if let Some((i, _)) = serials.iter().enumerate().find(|(i, s)| {
                    let sp = child(**s, "target").and_then(|t| t.attribute("port"));
                    sp.map_or(*i == 0 && port == "0", |sp| sp == port)
                }) {
                    self.g.skip(
                        origin,
                        format!("the same device as serial{i}, whose rules cover it"),
                    );
                    return;
                }
            }
        }
        if kind == "channel" {
            if let Some(n) = child(dev, "target").and_then(|t| attr(t, "name")) {
                origin = format!("{origin} {n}");
            }
        }
        self.chardev_source(dev, &origin);
    }

    /// A chardev backend described by `node`'s `type` attribute and its
    /// `<source>` and `<log>` children. File-like types get `rw` on their
    /// path; `pipe` gets `PATH.in` and `PATH.out` (and `PATH` itself, which
    /// QEMU opens when the pair does not exist); the log file gets `w`.
    /// Network and virtual backends get nothing, with the reason.
    pub(crate) fn chardev_source(&mut self, node: Node<'_, '_>, origin: &str) {
        let ty = node.attribute("type").unwrap_or("pty");
        let path = children(node, "source").find_map(|s| attr(s, "path"));
        let o = format!("{origin} ({ty})");
        match (ty, path) {
            ("file" | "pty" | "dev" | "unix", Some(p)) => self.file(p, Access::RW, o),
            ("pipe", Some(p)) => {
                self.file(format!("{p}.in"), Access::RW, o.clone());
                self.file(format!("{p}.out"), Access::RW, o.clone());
                self.file(p, Access::RW, o);
            }
            ("pty", None) => self.g.skip(
                o,
                "pty: QEMU allocates it through /dev/ptmx when it starts (granted by the abstraction)",
            ),
            ("unix", None) => self.g.skip(
                o,
                "unix socket without a path: libvirt chooses it when the guest starts, \
                 and the XML it then hands over names it",
            ),
            ("file" | "dev" | "pipe", None) => {
                self.g.skip(o, format!("{ty} chardev without a source path"))
            }
            (other, _) => self.g.skip(
                o,
                format!("{other} chardev: a network or virtual backend, no host file"),
            ),
        }
        if let Some(log) = child(node, "log").and_then(|l| attr(l, "file")) {
            self.file(log, Access::W, format!("{origin} log"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn file_pty_dev_unix_and_log() {
        let g = devs(
            "<serial type='file'><source path='/srv/s.log'/><target port='0'/><log file='/srv/s.qlog' append='on'/></serial>\
             <serial type='pty'><source path='/dev/pts/4'/><target port='1'/></serial>\
             <parallel type='dev'><source path='/dev/parport0'/></parallel>\
             <channel type='unix'><source mode='bind' path='/run/ga.sock'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/srv/s.log", "rw", "serial0 (file)"),
                f("/srv/s.qlog", "w", "serial0 log"),
                f("/dev/pts/4", "rw", "serial1 (pty)"),
                f("/dev/parport0", "rw", "parallel0 (dev)"),
                f(
                    "/run/ga.sock",
                    "rw",
                    "channel0 org.qemu.guest_agent.0 (unix)"
                ),
            ]
        );
    }

    #[test]
    fn pipe_gets_in_and_out_also_for_virtio_consoles() {
        let g = devs(
            "<serial type='pipe'><source path='/srv/p'/><target port='0'/></serial>\
             <console type='pipe'><source path='/srv/p'/><target type='serial' port='0'/></console>\
             <console type='pipe'><source path='/srv/vc'/><target type='virtio' port='1'/></console>",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/srv/p.in", "rw", "serial0 (pipe)"),
                f("/srv/p.out", "rw", "serial0 (pipe)"),
                f("/srv/p", "rw", "serial0 (pipe)"),
                f("/srv/vc.in", "rw", "console1 (pipe)"),
                f("/srv/vc.out", "rw", "console1 (pipe)"),
                f("/srv/vc", "rw", "console1 (pipe)"),
            ]
        );
        assert_eq!(
            skips(&g),
            vec![(
                "console0".to_string(),
                "the same device as serial0, whose rules cover it".to_string()
            )]
        );
    }

    #[test]
    fn network_and_virtual_backends_get_nothing() {
        let g = devs(
            "<serial type='tcp'><source mode='bind' host='127.0.0.1' service='9999'/><protocol type='raw'/></serial>\
             <serial type='udp'><source mode='bind' host='0.0.0.0' service='1'/></serial>\
             <serial type='null'/><channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>\
             <serial type='pty'/><channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
        );
        assert!(g.resources.is_empty());
        let s = skips(&g);
        assert_eq!(s.len(), 6);
        assert_eq!(s[0].0, "serial0 (tcp)");
        assert!(s[0].1.contains("network or virtual backend"));
        assert_eq!(s[3].0, "channel0 com.redhat.spice.0 (spicevmc)");
        assert!(s[4].1.contains("/dev/ptmx"));
        assert!(s[5].1.contains("libvirt chooses it"));
    }
}
