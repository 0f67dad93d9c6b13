//! `<qemu:commandline>`: arguments libvirt passes to QEMU unchanged.
//!
//! libvirt does not interpret these, so neither can we fully; aa-virt grants
//! an absolute path only where QEMU's syntax says it is a file:
//!
//! - the value of a recognised key in a `key=value,…` option list
//!   (`file=`, `filename=`, `path=`, `socket=`, `logfile=`, `mem-path=`),
//!   e.g. `-drive file=/x,if=none` or `-chardev socket,id=c,path=/x`
//!   (QEMU's `,,` escape for a literal comma is honoured);
//! - the same keys inside a JSON argument (`-blockdev {"driver":"file",
//!   "filename":"/x"}`), at any depth;
//! - the argument after an option that takes a path (`-kernel /x`,
//!   `-drive` is not one of them: its argument is an option list).
//!
//! Such paths get `rw` (`r` after the options that only read: `-kernel`,
//! `-initrd`, `-dtb`, `-bios`, `-option-rom`, `-readconfig`), or the whole
//! tree when the path is an existing directory (`-fsdev local,path=/dir`).
//! Anything else, including a bare absolute path that follows no recognised
//! option, is left alone: granting every string that looks like a path
//! would let a typo widen the profile.

use std::path::Path;

use roxmltree::Node;

use super::{Reader, QEMU_NS};
use crate::guest::Access;

/// Keys whose absolute values are files QEMU opens.
const PATH_KEYS: &[&str] = &["file", "filename", "path", "socket", "logfile", "mem-path"];

/// Options whose next argument is a file QEMU only reads.
const READ_OPTS: &[&str] = &[
    "-kernel",
    "-initrd",
    "-dtb",
    "-bios",
    "-option-rom",
    "-readconfig",
];

/// Options whose next argument is a file QEMU may write.
const RW_OPTS: &[&str] = &[
    "-hda",
    "-hdb",
    "-hdc",
    "-hdd",
    "-cdrom",
    "-fda",
    "-fdb",
    "-mtdblock",
    "-sd",
    "-pflash",
    "-pidfile",
];

impl Reader<'_> {
    /// Grant the files named in `<qemu:commandline>` arguments (see the
    /// module documentation for the heuristic).
    pub(crate) fn qemu_commandline(&mut self, cl: Node<'_, '_>) {
        let args: Vec<&str> = cl
            .children()
            .filter(|c| {
                c.is_element()
                    && c.tag_name().name() == "arg"
                    && c.tag_name().namespace() == Some(QEMU_NS)
            })
            .filter_map(|c| c.attribute("value"))
            .collect();
        for (i, a) in args.iter().enumerate() {
            let origin = format!("qemu:commandline argument {}", i + 1);
            let prev = if i > 0 { args[i - 1] } else { "" };
            let mut found: Vec<(String, Access)> = Vec::new();
            if a.starts_with('/') && READ_OPTS.contains(&prev) {
                found.push((a.to_string(), Access::R));
            } else if a.starts_with('/') && RW_OPTS.contains(&prev) {
                found.push((a.to_string(), Access::RW));
            } else if a.trim_start().starts_with('{') {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(a) {
                    json_paths(&v, &mut found);
                }
            } else {
                for item in split_opts(a) {
                    if let Some((k, v)) = item.split_once('=') {
                        if PATH_KEYS.contains(&k) && v.starts_with('/') {
                            found.push((v.to_string(), Access::RW));
                        }
                    }
                }
            }
            for (p, acc) in found {
                if Path::new(&p).is_dir() {
                    self.tree(p, acc, origin.clone());
                } else {
                    self.file(p, acc, origin.clone());
                }
            }
        }
    }
}

fn json_paths(v: &serde_json::Value, out: &mut Vec<(String, Access)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s)
                        if PATH_KEYS.contains(&k.as_str()) && s.starts_with('/') =>
                    {
                        out.push((s.clone(), Access::RW))
                    }
                    _ => json_paths(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_paths(v, out)),
        _ => {}
    }
}

/// Split a QEMU option list on `,`, where `,,` is a literal comma.
fn split_opts(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == ',' {
            if it.peek() == Some(&',') {
                it.next();
                cur.push(',');
            } else {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn recognised_keys_json_and_options_only() {
        let g = guest(
            "",
            "",
            r#"<qemu:commandline>
                 <qemu:arg value='-drive'/><qemu:arg value='file=/srv/a,,b.img,if=none,id=d0'/>
                 <qemu:arg value='-chardev'/><qemu:arg value='socket,id=c0,path=/run/c0.sock,server=on'/>
                 <qemu:arg value='-blockdev'/><qemu:arg value='{"driver":"qcow2","file":{"driver":"file","filename":"/srv/j.qcow2"}}'/>
                 <qemu:arg value='-kernel'/><qemu:arg value='/srv/vmlinuz'/>
                 <qemu:arg value='-name'/><qemu:arg value='/not/a/file'/>
                 <qemu:arg value='-device'/><qemu:arg value='virtio-rng,id=r,path=relative'/>
                 <qemu:env name='X' value='/srv/env'/>
               </qemu:commandline>"#,
        );
        assert_eq!(
            g.resources,
            vec![
                f("/srv/a,b.img", "rw", "qemu:commandline argument 2"),
                f("/run/c0.sock", "rw", "qemu:commandline argument 4"),
                f("/srv/j.qcow2", "rw", "qemu:commandline argument 6"),
                f("/srv/vmlinuz", "r", "qemu:commandline argument 8"),
            ]
        );
    }

    #[test]
    fn other_namespaces_are_ignored() {
        let g = guest(
            "",
            "",
            "<commandline><arg value='file=/srv/x'/></commandline>",
        );
        assert!(g.resources.is_empty());
    }
}
