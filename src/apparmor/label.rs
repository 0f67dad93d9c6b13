//! AppArmor labels: parsing the kernel's text form (stacks, namespaces,
//! modes), reading a process's label from procfs, and changing our own.
//!
//! Every open of a `/proc/<pid>/attr/...` file is `O_NOFOLLOW | O_CLOEXEC`,
//! and below the system root the opened file must live on procfs
//! (`fstatfs` gives `PROC_SUPER_MAGIC`): a process that can mount over
//! `/proc` must not be able to make us write a label command into a file of
//! its choosing or read a forged label (runc's CVE-2019-16884).
//!
//! Writes follow the kernel's rules: a task may only write its own
//! attributes, the opener must be the writer, and the whole command goes in
//! one `write()` (`changeprofile L`, `stack L` to `current`; `exec L`,
//! `stack L` to `exec`). The per-LSM `attr/apparmor/` directory is used
//! when the kernel has it, the legacy `attr/` otherwise.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

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
    /// The kernel has no AppArmor attribute to read or write (AppArmor is
    /// not in the kernel, or not the module answering `attr/current`).
    #[error("AppArmor not available: {path}: {source}")]
    Unavailable {
        /// The attribute file.
        path: PathBuf,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The file is not on procfs: something is mounted over `/proc`.
    #[error("{0} is not on procfs (something is mounted over /proc); refusing to use it")]
    NotProcfs(PathBuf),
    /// Writing a label command failed.
    #[error("writing {command:?} to {path}: {source}")]
    Write {
        /// The attribute file.
        path: PathBuf,
        /// The command (`changeprofile L`, ...).
        command: String,
        /// Why.
        source: std::io::Error,
    },
}

/// `PROC_SUPER_MAGIC` from `<linux/magic.h>`.
pub const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// Which attribute file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    /// `current`: the task's label now.
    Current,
    /// `exec`: the label the task gets at its next exec.
    Exec,
}

impl Attr {
    fn file(self) -> &'static str {
        match self {
            Attr::Current => "current",
            Attr::Exec => "exec",
        }
    }
}

/// Fail unless `f` lives on procfs.
fn verify_procfs(f: &File, path: &Path) -> Result<(), LabelError> {
    // SAFETY: fstatfs on a descriptor we own, into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } != 0 {
        return Err(LabelError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    #[allow(clippy::unnecessary_cast)]
    if st.f_type as i64 != PROC_SUPER_MAGIC {
        return Err(LabelError::NotProcfs(path.to_path_buf()));
    }
    Ok(())
}

/// Open `<task>/attr/apparmor/<attr>`, or `<task>/attr/<attr>` on kernels
/// without the per-LSM directory; `task` is `<root>/proc/<pid>` or
/// `<root>/proc/thread-self`. `Ok(None)` when the task does not exist.
fn open_attr(
    root: &Root,
    task: &Path,
    attr: Attr,
    write: bool,
) -> Result<Option<(File, PathBuf)>, LabelError> {
    let open = |p: &Path| {
        let mut o = std::fs::OpenOptions::new();
        if write {
            o.write(true);
        } else {
            o.read(true);
        }
        o.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(p)
    };
    let mut found = None;
    for rel in [
        format!("attr/apparmor/{}", attr.file()),
        format!("attr/{}", attr.file()),
    ] {
        let path = task.join(rel);
        match open(&path) {
            Ok(f) => {
                found = Some((f, path));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(LabelError::Read { path, source }),
        }
    }
    let Some((f, path)) = found else {
        return Ok(None);
    };
    if root.procfs_check() {
        verify_procfs(&f, &path)?;
    }
    Ok(Some((f, path)))
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
    let task = root.proc_dir().join(pid.to_string());
    let Some((mut f, path)) = open_attr(root, &task, Attr::Current, false)? else {
        return Err(LabelError::NoProcess { pid });
    };
    let mut bytes = Vec::new();
    if let Err(source) = Read::by_ref(&mut f).take(64 * 1024).read_to_end(&mut bytes) {
        return Err(match source.raw_os_error() {
            // The LSM hook answers EINVAL when AppArmor is not there.
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => LabelError::Unavailable { path, source },
            Some(libc::ESRCH) => LabelError::NoProcess { pid },
            _ => LabelError::Read { path, source },
        });
    }
    Label::parse(&String::from_utf8_lossy(&bytes))
}

/// Every process below `root`'s `/proc` whose label satisfies `pred`, with
/// its label, by pid. Processes that vanish or cannot be read are skipped.
pub fn processes_where(root: &Root, pred: impl Fn(&Label) -> bool) -> Vec<(u32, Label)> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(root.proc_dir()) else {
        return v;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(l) = process_label(root, pid) {
            if pred(&l) {
                v.push((pid, l));
            }
        }
    }
    v.sort_by_key(|(p, _)| *p);
    v
}

/// Write one command to the calling thread's attribute
/// (`<root>/proc/thread-self/attr/...`) in a single `write()`.
pub fn write_self(root: &Root, attr: Attr, command: &str) -> Result<(), LabelError> {
    let task = root.proc_dir().join("thread-self");
    let Some((mut f, path)) = open_attr(root, &task, attr, true)? else {
        return Err(LabelError::Unavailable {
            path: task.join("attr"),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
    };
    match f.write(command.as_bytes()) {
        Ok(n) if n == command.len() => Ok(()),
        Ok(n) => Err(LabelError::Write {
            path,
            command: command.to_string(),
            source: std::io::Error::other(format!("short write ({n} of {} bytes)", command.len())),
        }),
        Err(source)
            if source.raw_os_error() == Some(libc::EINVAL)
                && !root.kernel_status().is_available() =>
        {
            Err(LabelError::Unavailable { path, source })
        }
        Err(source) => Err(LabelError::Write {
            path,
            command: command.to_string(),
            source,
        }),
    }
}

/// Change the calling thread's label to `label` now (`changeprofile`).
pub fn change_profile(label: &str) -> Result<(), LabelError> {
    write_self(
        &Root::system(),
        Attr::Current,
        &format!("changeprofile {label}"),
    )
}

/// Stack `label` on the calling thread's label now (`stack`).
pub fn stack_profile(label: &str) -> Result<(), LabelError> {
    write_self(&Root::system(), Attr::Current, &format!("stack {label}"))
}

/// Change to `label` at the calling thread's next exec (`exec`).
pub fn change_onexec(label: &str) -> Result<(), LabelError> {
    write_self(&Root::system(), Attr::Exec, &format!("exec {label}"))
}

/// Stack `label` at the calling thread's next exec (`stack` to `exec`).
pub fn stack_onexec(label: &str) -> Result<(), LabelError> {
    write_self(&Root::system(), Attr::Exec, &format!("stack {label}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::fake::FakeTree;

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

    #[test]
    fn refuses_a_fake_proc_when_checking() {
        let d = tempfile::tempdir().unwrap();
        let mut t = FakeTree::new(d.path()).unwrap();
        t.process(10, "a (enforce)").unwrap();
        let root = Root::new(d.path()).with_procfs_check(true);
        assert!(matches!(
            process_label(&root, 10),
            Err(LabelError::NotProcfs(_))
        ));
        let cur = d.path().join("proc/thread-self/attr/apparmor/current");
        std::fs::create_dir_all(cur.parent().unwrap()).unwrap();
        std::fs::write(&cur, "").unwrap();
        assert!(matches!(
            write_self(&root, Attr::Current, "changeprofile x"),
            Err(LabelError::NotProcfs(_))
        ));
        assert_eq!(std::fs::read(&cur).unwrap(), b"", "nothing written");
        // Without the check (a test tree), the single write lands whole.
        write_self(&Root::new(d.path()), Attr::Current, "stack :ns:").unwrap();
        assert_eq!(std::fs::read(&cur).unwrap(), b"stack :ns:");
    }

    #[test]
    fn symlinked_attr_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("proc/5/attr/apparmor");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(d.path().join("target"), "x (enforce)\n").unwrap();
        std::os::unix::fs::symlink(d.path().join("target"), t.join("current")).unwrap();
        let e = process_label(&Root::new(d.path()), 5).unwrap_err();
        assert!(matches!(e, LabelError::Read { .. }), "{e}");
    }

    #[test]
    fn finds_processes_by_label() {
        let d = tempfile::tempdir().unwrap();
        let mut t = FakeTree::new(d.path()).unwrap();
        t.process(10, "p//&:ns:unconfined (enforce)")
            .unwrap()
            .process(11, "unconfined")
            .unwrap();
        let found = processes_where(&Root::new(d.path()), |l| l.namespaces().any(|n| n == "ns"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 10);
    }

    #[test]
    fn real_proc_passes_the_procfs_check() {
        // Without AppArmor the read fails as unavailable; with it, it gives
        // a label. Either way the procfs check passed.
        match process_label(&Root::system(), std::process::id()) {
            Ok(l) => assert!(!l.parts.is_empty()),
            Err(LabelError::Unavailable { .. }) => {
                assert!(!Root::system().kernel_status().is_available())
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }

    #[test]
    fn writing_an_unknown_label_fails_clearly() {
        match change_profile("lxc-aa-virt-no-such-profile") {
            Err(e @ LabelError::Unavailable { .. }) => {
                assert!(e.to_string().starts_with("AppArmor not available"));
                assert!(!Root::system().kernel_status().is_available())
            }
            // With AppArmor, the kernel refuses a profile that is not loaded.
            Err(LabelError::Write { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{source}")
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
}
