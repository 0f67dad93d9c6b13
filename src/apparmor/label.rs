//! AppArmor labels: parsing the kernel's text form (stacks, namespaces,
//! modes) and reading a process's label from procfs.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::securityfs::{split_mode, split_ns, Mode, Root};

/// Errors reading or parsing a label.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The label text is empty or has an empty stack component.
    #[error("not an AppArmor label: {0:?}")]
    Malformed(String),
    /// The process does not exist (any more).
    #[error("process {pid} does not exist (the guest stopped?)")]
    NoProcess {
        /// The pid.
        pid: u32,
    },
    /// The attribute file could not be read.
    #[error("cannot read {path}: {source} (run as root to read other processes' labels)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One profile in a label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct LabelPart {
    /// Its policy namespace relative to the viewer (`None` = the viewer's).
    pub ns: Option<String>,
    /// The profile name; `unconfined` for a namespace's default.
    pub name: String,
}

impl fmt::Display for LabelPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ns {
            Some(ns) => write!(f, ":{ns}:{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A label: one profile, or a stack `a//&:ns:b`, with the mode the kernel
/// reports when read from procfs (`None` for `unconfined` and for labels
/// written in configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    /// The stacked profiles, in the order given.
    pub parts: Vec<LabelPart>,
    /// The mode, when the text carried one.
    pub mode: Option<Mode>,
}

impl Label {
    /// Parse `unconfined`, `name (mode)`, `a//&:ns:b (mixed)`,
    /// `p//&:ns:` (an empty name in a namespace means its `unconfined`), or
    /// `:ns://p`.
    pub fn parse(text: &str) -> Result<Label, LabelError> {
        let t = text.trim_end_matches(['\n', '\0']).trim();
        let (body, mode) = match split_mode(t) {
            Some((b, m)) => (b, Some(m)),
            None => (t, None),
        };
        if body.is_empty() {
            return Err(LabelError::Malformed(text.to_string()));
        }
        let mut parts = Vec::new();
        for comp in body.split("//&") {
            let (ns, name) = split_ns(comp);
            let name = match (ns, name) {
                (Some(_), "") => "unconfined",
                (None, "") => return Err(LabelError::Malformed(text.to_string())),
                (_, n) => n,
            };
            parts.push(LabelPart {
                ns: ns.map(str::to_string),
                name: name.to_string(),
            });
        }
        Ok(Label { parts, mode })
    }

    /// A single profile in the viewer's namespace.
    pub fn profile(name: &str) -> Label {
        Label {
            parts: vec![LabelPart {
                ns: None,
                name: name.to_string(),
            }],
            mode: None,
        }
    }

    /// True for plain `unconfined` (no profile at all).
    pub fn is_unconfined(&self) -> bool {
        self.parts.len() == 1 && self.parts[0].ns.is_none() && self.parts[0].name == "unconfined"
    }

    /// The same profiles as `other`, in any order, ignoring modes.
    pub fn same_profiles(&self, other: &Label) -> bool {
        let mut a = self.parts.clone();
        let mut b = other.parts.clone();
        a.sort();
        b.sort();
        a == b
    }

    /// The profiles in the viewer's own namespace.
    pub fn own_profiles(&self) -> impl Iterator<Item = &str> {
        self.parts
            .iter()
            .filter(|p| p.ns.is_none())
            .map(|p| p.name.as_str())
    }

    /// The policy namespaces the label stacks into.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| p.ns.as_deref())
    }
}

impl fmt::Display for Label {
    /// The label without its mode, in the kernel's spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str("//&")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The current label of process `pid`, from `/proc/<pid>/attr/apparmor/current`
/// or, on kernels without the per-LSM directory, `/proc/<pid>/attr/current`.
///
/// Only meaningful when AppArmor is in the kernel (check
/// [`Root::kernel_status`]); the legacy file belongs to whichever LSM the
/// kernel displays.
pub fn process_label(root: &Root, pid: u32) -> Result<Label, LabelError> {
    let base = root.proc_dir().join(pid.to_string());
    let read = |rel: &str| {
        let path = base.join(rel);
        std::fs::read(&path).map_err(|source| (path, source))
    };
    let bytes = match read("attr/apparmor/current") {
        Ok(b) => b,
        Err((_, e)) if e.kind() == std::io::ErrorKind::NotFound => match read("attr/current") {
            Ok(b) => b,
            Err((_, e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabelError::NoProcess { pid })
            }
            Err((path, source)) => return Err(LabelError::Read { path, source }),
        },
        Err((path, source)) => return Err(LabelError::Read { path, source }),
    };
    Label::parse(&String::from_utf8_lossy(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::securityfs::FakeTree;

    #[test]
    fn parses_the_kernel_forms() {
        let l = Label::parse("unconfined\n").unwrap();
        assert!(l.is_unconfined());
        assert_eq!(l.mode, None);

        let l = Label::parse("libvirt-6695eb01-f6a4-8304-79aa-97f2502e193f (enforce)\n").unwrap();
        assert_eq!(l.mode, Some(Mode::Enforce));
        assert_eq!(
            l.to_string(),
            "libvirt-6695eb01-f6a4-8304-79aa-97f2502e193f"
        );

        let l = Label::parse("lxc-a_<-var-lib-lxc>//&:lxc-a_<-var-lib-lxc>:unconfined (enforce)")
            .unwrap();
        assert_eq!(l.parts.len(), 2);
        assert_eq!(l.parts[1].ns.as_deref(), Some("lxc-a_<-var-lib-lxc>"));
        assert_eq!(l.parts[1].name, "unconfined");
        assert_eq!(
            l.own_profiles().collect::<Vec<_>>(),
            ["lxc-a_<-var-lib-lxc>"]
        );
        assert_eq!(l.namespaces().collect::<Vec<_>>(), ["lxc-a_<-var-lib-lxc>"]);
        assert!(!l.is_unconfined());

        // The configured form: empty name after the namespace.
        let cfg = Label::parse("lxc-a_<-var-lib-lxc>//&:lxc-a_<-var-lib-lxc>:").unwrap();
        assert!(cfg.same_profiles(&l));
        assert_eq!(cfg.mode, None);
        let cfg2 =
            Label::parse(":lxc-a_<-var-lib-lxc>://unconfined//&lxc-a_<-var-lib-lxc>").unwrap();
        assert!(cfg2.same_profiles(&l));

        let mixed = Label::parse("a//&b (mixed)").unwrap();
        assert_eq!(mixed.mode, Some(Mode::Mixed));
        assert!(!mixed.same_profiles(&l));

        assert!(Label::parse("").is_err());
        assert!(Label::parse("a//&").is_err());
    }

    #[test]
    fn reads_process_labels_with_fallback() {
        let d = tempfile::tempdir().unwrap();
        let mut t = FakeTree::new(d.path()).unwrap();
        t.process(
            10,
            "lxc-a_<-var-lib-lxc>//&:lxc-a_<-var-lib-lxc>:unconfined (enforce)",
        )
        .unwrap()
        .legacy_process(11, "libvirt-x (complain)")
        .unwrap()
        .process(12, "unconfined")
        .unwrap();
        let r = Root::new(d.path());
        assert_eq!(process_label(&r, 10).unwrap().parts.len(), 2);
        let l = process_label(&r, 11).unwrap();
        assert_eq!(
            (l.to_string(), l.mode),
            ("libvirt-x".into(), Some(Mode::Complain))
        );
        assert!(process_label(&r, 12).unwrap().is_unconfined());
        assert!(matches!(
            process_label(&r, 13),
            Err(LabelError::NoProcess { pid: 13 })
        ));
    }
}
