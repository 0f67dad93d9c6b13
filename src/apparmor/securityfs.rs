//! The kernel's AppArmor state in securityfs: loaded profiles and their
//! modes, policy namespaces and the caller's namespace view (read side), and
//! the few writes aa-virt makes there (make and remove a policy namespace,
//! unload is in the `kernel` module, which builds on this one), and whether the kernel has
//! AppArmor at all ([`status_at`]).
//!
//! Kernel facts the write side relies on: `mkdir policy/namespaces/NAME`
//! makes a namespace (EEXIST when it is there); `rmdir` removes it together
//! with every profile in it.
//!
//! Everything is read below a [`Root`], which is `/` on a real system and a
//! directory tree in tests (the files there mirror the kernel's formats
//! exactly; `apparmor::fake::FakeTree` writes them in tests).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What the running kernel offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelStatus {
    /// AppArmor is enabled and securityfs is mounted.
    Available {
        /// securityfs directory (`/sys/kernel/security/apparmor`).
        fs: PathBuf,
    },
    /// Policy cannot be loaded; the reason says why.
    Unavailable(String),
}

impl KernelStatus {
    /// True when policy can be loaded.
    pub fn is_available(&self) -> bool {
        matches!(self, KernelStatus::Available { .. })
    }
}

/// Probe the kernel under `root` (`/` on a real system; tests point it at a tree).
pub fn status_at(root: &Path) -> KernelStatus {
    let enabled = root.join("sys/module/apparmor/parameters/enabled");
    let fs = root.join("sys/kernel/security/apparmor");
    match std::fs::read_to_string(&enabled) {
        Err(_) => {
            let lsm = std::fs::read_to_string(root.join("sys/kernel/security/lsm")).unwrap_or_default();
            KernelStatus::Unavailable(if lsm.is_empty() {
                "this kernel has no AppArmor support (no /sys/module/apparmor)".into()
            } else {
                format!("AppArmor is not among this kernel's security modules ({})", lsm.trim())
            })
        }
        Ok(s) if s.trim() != "Y" => {
            KernelStatus::Unavailable("AppArmor is built into this kernel but disabled (boot with apparmor=1 security=apparmor)".into())
        }
        Ok(_) if !fs.join("profiles").exists() => KernelStatus::Unavailable(format!(
            "AppArmor is enabled but {} is not mounted (mount -t securityfs securityfs /sys/kernel/security)",
            fs.display()
        )),
        Ok(_) => KernelStatus::Available { fs },
    }
}

/// Probe the running kernel.
pub fn status() -> KernelStatus {
    status_at(Path::new("/"))
}

/// Errors reading securityfs.
#[derive(Debug, thiserror::Error)]
pub enum SecurityfsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source} (run as root to see the kernel's AppArmor policy)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not in the kernel's `name (mode)` format.
    #[error("{path}: line {line}: not a `name (mode)` entry: {text:?}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },
    /// A namespace name the kernel cannot take.
    #[error("{0:?} cannot be an AppArmor policy namespace name: {1}")]
    BadNamespace(String, &'static str),
    /// A write (mkdir, rmdir, unload) failed.
    #[error("{op} {path}: {source}")]
    Write {
        /// What we were doing.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The longest name a namespace directory may have (NAME_MAX).
pub const MAX_NAMESPACE_LEN: usize = 255;

/// Check that `ns` can name a policy namespace: not empty, no `/` (a path
/// separator) and no `:` (the label syntax's namespace delimiter), no
/// control characters, not `.` or `..`, at most [`MAX_NAMESPACE_LEN`] bytes.
pub fn check_namespace(ns: &str) -> Result<(), SecurityfsError> {
    let bad = |why| Err(SecurityfsError::BadNamespace(ns.to_string(), why));
    if ns.is_empty() {
        return bad("it is empty");
    }
    if ns.contains('/') {
        return bad("it contains '/'");
    }
    if ns.contains(':') {
        return bad("it contains ':'");
    }
    if ns == "." || ns == ".." {
        return bad("it is a relative path component");
    }
    if ns.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    if ns.len() > MAX_NAMESPACE_LEN {
        return bad("it is longer than 255 bytes");
    }
    Ok(())
}

/// A profile's (or a label's) mode, as the kernel prints it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `enforce`
    Enforce,
    /// `complain`
    Complain,
    /// `kill`
    Kill,
    /// `unconfined`
    Unconfined,
    /// `user` (prompting; newer kernels)
    User,
    /// `mixed`: a stacked label whose profiles are in different modes.
    Mixed,
    /// Anything else a future kernel prints.
    #[serde(untagged)]
    Other(String),
}

impl Mode {
    /// Parse a mode word (`enforce`, `complain`, ...).
    pub fn parse(s: &str) -> Mode {
        match s {
            "enforce" => Mode::Enforce,
            "complain" => Mode::Complain,
            "kill" => Mode::Kill,
            "unconfined" => Mode::Unconfined,
            "user" => Mode::User,
            "mixed" => Mode::Mixed,
            o => Mode::Other(o.to_string()),
        }
    }

    /// The word the kernel prints.
    pub fn as_str(&self) -> &str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Complain => "complain",
            Mode::Kill => "kill",
            Mode::Unconfined => "unconfined",
            Mode::User => "user",
            Mode::Mixed => "mixed",
            Mode::Other(s) => s,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Split the kernel's `text (mode)` form into the text and the mode.
///
/// The mode is the last parenthesised word, so names that themselves
/// contain ` (` still split correctly. Returns `None` when there is no
/// trailing ` (mode)`.
pub fn split_mode(s: &str) -> Option<(&str, Mode)> {
    let s = s.trim_end_matches(['\n', '\0']);
    let inner = s.strip_suffix(')')?;
    let (name, mode) = inner.rsplit_once(" (")?;
    if name.is_empty() || mode.is_empty() || mode.contains([' ', '(', ')']) {
        return None;
    }
    Some((name, Mode::parse(mode)))
}

/// Split a profile name as printed from the root namespace's view into its
/// policy namespace (`:ns:name` or `:ns://name`) and the name inside it.
/// A leading `root//` on the namespace (the audit form) is dropped.
pub fn split_ns(s: &str) -> (Option<&str>, &str) {
    if let Some(rest) = s.strip_prefix(':') {
        if let Some((ns, name)) = rest.split_once(':') {
            let ns = ns.strip_prefix("root//").unwrap_or(ns);
            return (Some(ns), name.strip_prefix("//").unwrap_or(name));
        }
    }
    (None, s)
}

/// One loaded profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadedProfile {
    /// The policy namespace it is in, relative to the caller's (`None` for
    /// the caller's own namespace).
    pub ns: Option<String>,
    /// The profile name (children as `parent//child`).
    pub name: String,
    /// Its mode.
    pub mode: Mode,
}

/// All loaded profiles, by namespace and name.
#[derive(Debug, Clone, Default)]
pub struct LoadedProfiles {
    by_name: HashMap<(Option<String>, String), Mode>,
    ns_counts: HashMap<String, usize>,
}

impl LoadedProfiles {
    /// Parse the text of securityfs `profiles`: one `name (mode)` per line,
    /// namespaced profiles as `:ns:name (mode)`. `path` only names the file
    /// in errors.
    pub fn parse(text: &str, path: &Path) -> Result<LoadedProfiles, SecurityfsError> {
        let mut out = LoadedProfiles::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (full, mode) = split_mode(line).ok_or_else(|| SecurityfsError::Format {
                path: path.to_path_buf(),
                line: i + 1,
                text: line.to_string(),
            })?;
            let (ns, name) = split_ns(full);
            if let Some(ns) = ns {
                *out.ns_counts.entry(ns.to_string()).or_default() += 1;
            }
            out.by_name
                .insert((ns.map(str::to_string), name.to_string()), mode);
        }
        Ok(out)
    }

    /// The mode of profile `name` in namespace `ns` (`None` = the caller's).
    pub fn mode(&self, ns: Option<&str>, name: &str) -> Option<&Mode> {
        self.by_name
            .get(&(ns.map(str::to_string), name.to_string()))
    }

    /// How many profiles are loaded in namespace `ns`.
    pub fn count_in(&self, ns: &str) -> usize {
        self.ns_counts.get(ns).copied().unwrap_or(0)
    }

    /// Number of loaded profiles.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when nothing is loaded.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every profile, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = LoadedProfile> + '_ {
        self.by_name.iter().map(|((ns, name), mode)| LoadedProfile {
            ns: ns.clone(),
            name: name.clone(),
            mode: mode.clone(),
        })
    }
}

/// The caller's view of policy namespaces (`.ns_stacked`, `.ns_name`,
/// `.ns_level`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NsView {
    /// The caller is itself in a stacked namespace (a confined container).
    pub stacked: bool,
    /// Its namespace name (`root` on a host).
    pub name: String,
    /// Its nesting level (0 on a host).
    pub level: u32,
}

/// The kernel's name for a profile's directory under `policy/profiles`
/// (without the `.<id>` suffix): leading `/` and `.` dropped, `/` → `.`,
/// whitespace → `_`, and only ASCII alphanumerics and `._-` kept.
pub fn mangle(name: &str) -> String {
    name.trim_start_matches(['/', '.'])
        .chars()
        .filter_map(|c| match c {
            '/' => Some('.'),
            c if c.is_ascii_whitespace() => Some('_'),
            c if c.is_ascii_alphanumeric() || "._-".contains(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// A root directory under which `/sys` and `/proc` are read.
///
/// Only the system root checks that files under `/proc` really live on
/// procfs before trusting them (see [`crate::apparmor::label`]); a test can
/// turn the check on for a fake tree with [`Root::with_procfs_check`] to
/// prove that it refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    root: PathBuf,
    procfs_check: bool,
}

/// Environment variable naming a tree that stands in for `/` when looking up
/// kernel interfaces (`/sys/kernel/security`, `/proc`); tests only.
pub const SYSROOT_ENV: &str = "AA_VIRT_SYSROOT";

impl Default for Root {
    fn default() -> Self {
        Root::system()
    }
}

impl Root {
    /// A root at `path` (`/` in production; a directory tree in tests).
    pub fn new(path: impl Into<PathBuf>) -> Root {
        let root = path.into();
        let procfs_check = root == Path::new("/");
        Root { root, procfs_check }
    }

    /// The system root, or the tree named by the environment variable `var`
    /// when it is set and not empty (tests point hooks at a fake tree).
    pub fn from_env(var: &str) -> Root {
        match std::env::var_os(var) {
            Some(v) if !v.is_empty() => Root::new(PathBuf::from(v)),
            _ => Root::system(),
        }
    }

    /// Turn the procfs check on or off.
    pub fn with_procfs_check(mut self, on: bool) -> Root {
        self.procfs_check = on;
        self
    }

    /// True when files under `proc/` must be verified to live on procfs
    /// (on for `/`, off for test trees).
    pub fn procfs_check(&self) -> bool {
        self.procfs_check
    }

    /// The real system (`/`).
    pub fn system() -> Root {
        Root::new("/")
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `<root>/sys/kernel/security/apparmor`.
    pub fn apparmor_dir(&self) -> PathBuf {
        self.root.join("sys/kernel/security/apparmor")
    }

    /// `<root>/proc`.
    pub fn proc_dir(&self) -> PathBuf {
        self.root.join("proc")
    }

    /// `features/<rel>` (e.g. `domain/version`), trimmed; `None` when absent.
    pub fn feature(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.apparmor_dir().join("features").join(rel))
            .ok()
            .map(|s| s.trim_end_matches(['\n', '\0']).to_string())
    }

    /// True when `features/<rel>` exists (file or directory).
    pub fn has_feature(&self, rel: &str) -> bool {
        self.apparmor_dir().join("features").join(rel).exists()
    }

    /// `policy/namespaces/<ns>`.
    pub fn namespace_dir(&self, ns: &str) -> PathBuf {
        self.apparmor_dir().join("policy/namespaces").join(ns)
    }

    /// Make policy namespace `ns` (`mkdir`). Returns true when this call
    /// made it, false when it already existed.
    pub fn create_namespace(&self, ns: &str) -> Result<bool, SecurityfsError> {
        check_namespace(ns)?;
        let path = self.namespace_dir(ns);
        match std::fs::create_dir(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(SecurityfsError::Write {
                op: "create AppArmor policy namespace",
                path,
                source,
            }),
        }
    }

    /// Remove policy namespace `ns` with every profile in it (`rmdir`).
    /// Returns true when this call removed it, false when it was gone.
    pub fn remove_namespace(&self, ns: &str) -> Result<bool, SecurityfsError> {
        check_namespace(ns)?;
        let path = self.namespace_dir(ns);
        match std::fs::remove_dir(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(SecurityfsError::Write {
                op: "remove AppArmor policy namespace",
                path,
                source,
            }),
        }
    }

    /// Is AppArmor in this kernel, and is securityfs mounted?
    pub fn kernel_status(&self) -> KernelStatus {
        status_at(&self.root)
    }

    fn read(&self, rel: &str) -> Result<String, SecurityfsError> {
        let path = self.apparmor_dir().join(rel);
        std::fs::read_to_string(&path).map_err(|source| SecurityfsError::Read { path, source })
    }

    /// Every loaded profile the caller can see, from `profiles` (one read).
    pub fn profiles(&self) -> Result<LoadedProfiles, SecurityfsError> {
        let text = self.read("profiles")?;
        LoadedProfiles::parse(&text, &self.apparmor_dir().join("profiles"))
    }

    /// The names of the policy namespaces below the caller's
    /// (`policy/namespaces/*`), sorted.
    pub fn namespaces(&self) -> Result<Vec<String>, SecurityfsError> {
        let dir = self.apparmor_dir().join("policy/namespaces");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(SecurityfsError::Read { path: dir, source }),
        };
        let mut out: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Does policy namespace `ns` exist?
    pub fn namespace_exists(&self, ns: &str) -> bool {
        !ns.contains('/')
            && self
                .apparmor_dir()
                .join("policy/namespaces")
                .join(ns)
                .is_dir()
    }

    /// The profiles loaded inside namespace `ns`, from
    /// `policy/namespaces/<ns>/profiles/*/{name,mode}`, sorted by name.
    pub fn namespace_profiles(&self, ns: &str) -> Result<Vec<LoadedProfile>, SecurityfsError> {
        let dir = self
            .apparmor_dir()
            .join("policy/namespaces")
            .join(ns)
            .join("profiles");
        let mut out = profile_dirs(&dir)?
            .into_iter()
            .map(|(_, mut p)| {
                p.ns = Some(ns.to_string());
                p
            })
            .collect::<Vec<_>>();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The directory `policy/profiles/<mangled>.<id>` of the loaded profile
    /// `name` in the caller's namespace, checked against its `name` file.
    pub fn profile_dir(&self, name: &str) -> Result<Option<PathBuf>, SecurityfsError> {
        profile_dir_in(&self.apparmor_dir(), name)
    }

    /// The caller's namespace view; `None` when the kernel does not export
    /// it (no AppArmor, or a kernel without namespace support).
    pub fn ns_view(&self) -> Option<NsView> {
        let stacked = self.read(".ns_stacked").ok()?;
        let name = self.read(".ns_name").ok()?;
        let level = self
            .read(".ns_level")
            .ok()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        Some(NsView {
            stacked: stacked.trim() == "yes",
            name: name.trim().to_string(),
            level,
        })
    }
}

/// The directory `policy/profiles/<mangled>.<id>` of the loaded profile
/// `name` below securityfs directory `fs`, checked against its `name` file.
pub fn profile_dir_in(fs: &Path, name: &str) -> Result<Option<PathBuf>, SecurityfsError> {
    let prefix = format!("{}.", mangle(name));
    let dir = fs.join("policy/profiles");
    Ok(profile_dirs_matching(&dir, Some(&prefix))?
        .into_iter()
        .find(|(_, p)| p.name == name)
        .map(|(d, _)| d))
}

fn profile_dirs(dir: &Path) -> Result<Vec<(PathBuf, LoadedProfile)>, SecurityfsError> {
    profile_dirs_matching(dir, None)
}

/// Read `*/name` and `*/mode` of every profile directory in `dir` (whose
/// name starts with `prefix`, when given). A missing `dir` is empty.
fn profile_dirs_matching(
    dir: &Path,
    prefix: Option<&str>,
) -> Result<Vec<(PathBuf, LoadedProfile)>, SecurityfsError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SecurityfsError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for e in rd.filter_map(Result::ok) {
        let fname = e.file_name();
        let fname = fname.to_string_lossy();
        if prefix.is_some_and(|p| !fname.starts_with(p)) {
            continue;
        }
        let d = e.path();
        let read = |f: &str| {
            let path = d.join(f);
            std::fs::read_to_string(&path)
                .map(|s| s.trim_end_matches(['\n', '\0']).to_string())
                .map_err(|source| SecurityfsError::Read { path, source })
        };
        // A profile replaced or removed while we read is simply skipped.
        let (Ok(name), Ok(mode)) = (read("name"), read("mode")) else {
            continue;
        };
        out.push((
            d.clone(),
            LoadedProfile {
                ns: None,
                name,
                mode: Mode::parse(mode.trim()),
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::fake::FakeTree;

    #[test]
    fn splits_mode_and_namespace() {
        assert_eq!(
            split_mode("libvirt-x (enforce)\n"),
            Some(("libvirt-x", Mode::Enforce))
        );
        assert_eq!(
            split_mode("weird name (x) (complain)"),
            Some(("weird name (x)", Mode::Complain))
        );
        assert_eq!(split_mode("a//&:b:c (mixed)").unwrap().1, Mode::Mixed);
        assert_eq!(split_mode("unconfined"), None);
        assert_eq!(split_mode("x (two words)"), None);
        assert_eq!(
            split_ns(":lxc-a_<-v>:unconfined"),
            (Some("lxc-a_<-v>"), "unconfined")
        );
        assert_eq!(split_ns(":ns://p"), (Some("ns"), "p"));
        assert_eq!(split_ns(":root//ns:p"), (Some("ns"), "p"));
        assert_eq!(split_ns("/usr/bin/x"), (None, "/usr/bin/x"));
    }

    #[test]
    fn mangles_like_the_kernel() {
        assert_eq!(mangle("/usr/sbin/libvirtd"), "usr.sbin.libvirtd");
        assert_eq!(mangle("lxc-a_</var/lib/lxc>"), "lxc-a_.var.lib.lxc");
        assert_eq!(mangle("a b"), "a_b");
    }

    #[test]
    fn parses_a_fake_tree() {
        let d = tempfile::tempdir().unwrap();
        let mut t = FakeTree::new(d.path()).unwrap();
        t.load("/usr/sbin/libvirtd", "enforce")
            .unwrap()
            .load("/usr/sbin/libvirtd//qemu_bridge_helper", "enforce")
            .unwrap()
            .load("libvirt-6695eb01-f6a4-8304-79aa-97f2502e193f", "complain")
            .unwrap()
            .load("lxc-a_</var/lib/lxc>", "enforce")
            .unwrap()
            .load_in("lxc-a_<-var-lib-lxc>", "snap.hello", "enforce")
            .unwrap()
            .namespace("empty-ns")
            .unwrap();
        let r = Root::new(d.path());
        assert!(r.kernel_status().is_available());
        let p = r.profiles().unwrap();
        assert_eq!(p.len(), 5);
        assert_eq!(
            p.mode(None, "libvirt-6695eb01-f6a4-8304-79aa-97f2502e193f"),
            Some(&Mode::Complain)
        );
        assert_eq!(p.mode(None, "lxc-a_</var/lib/lxc>"), Some(&Mode::Enforce));
        assert_eq!(p.mode(None, "snap.hello"), None);
        assert_eq!(
            p.mode(Some("lxc-a_<-var-lib-lxc>"), "snap.hello"),
            Some(&Mode::Enforce)
        );
        assert_eq!(p.count_in("lxc-a_<-var-lib-lxc>"), 1);
        assert_eq!(p.count_in("empty-ns"), 0);
        assert_eq!(
            r.namespaces().unwrap(),
            vec!["empty-ns".to_string(), "lxc-a_<-var-lib-lxc>".to_string()]
        );
        assert!(r.namespace_exists("empty-ns"));
        assert!(!r.namespace_exists("nope"));
        assert!(!r.namespace_exists("../profiles"));
        let inner = r.namespace_profiles("lxc-a_<-var-lib-lxc>").unwrap();
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].name, "snap.hello");
        assert_eq!(inner[0].ns.as_deref(), Some("lxc-a_<-var-lib-lxc>"));
        let dir = r.profile_dir("lxc-a_</var/lib/lxc>").unwrap().unwrap();
        assert!(dir.ends_with("lxc-a_.var.lib.lxc.4"));
        assert_eq!(r.profile_dir("lxc-b_</var/lib/lxc>").unwrap(), None);
        assert_eq!(
            r.ns_view(),
            Some(NsView {
                stacked: false,
                name: "root".into(),
                level: 0
            })
        );
    }

    #[test]
    fn namespace_names() {
        assert!(check_namespace("lxc-c1_<-var-lib-lxc>-aa-virt").is_ok());
        for bad in ["", "a/b", "a:b", ".", "..", "a\nb"] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
        assert!(check_namespace(&"x".repeat(256)).is_err());
    }

    #[test]
    fn namespaces_are_made_and_removed_idempotently() {
        let d = tempfile::tempdir().unwrap();
        FakeTree::new(d.path()).unwrap();
        let r = Root::new(d.path());
        assert!(!r.procfs_check());
        assert!(Root::system().procfs_check());
        assert!(r.create_namespace("lxc-a").unwrap());
        assert!(!r.create_namespace("lxc-a").unwrap());
        assert!(r.namespace_exists("lxc-a"));
        assert!(r.remove_namespace("lxc-a").unwrap());
        assert!(!r.remove_namespace("lxc-a").unwrap());
        assert!(r.create_namespace("a/b").is_err());
    }

    #[test]
    fn feature_files() {
        let d = tempfile::tempdir().unwrap();
        let r = Root::new(d.path());
        std::fs::create_dir_all(r.apparmor_dir().join("features/domain")).unwrap();
        std::fs::write(r.apparmor_dir().join("features/domain/version"), "1.2\n").unwrap();
        assert_eq!(r.feature("domain/version").as_deref(), Some("1.2"));
        assert!(r.has_feature("domain"));
        assert!(!r.has_feature("mount"));
    }

    #[test]
    fn rejects_garbage_and_reports_missing_kernel() {
        let err = LoadedProfiles::parse("good (enforce)\nno mode here\n", Path::new("/p"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        let d = tempfile::tempdir().unwrap();
        let r = Root::new(d.path());
        assert!(!r.kernel_status().is_available());
        assert!(r.profiles().is_err());
        assert_eq!(r.namespaces().unwrap(), Vec::<String>::new());
        assert_eq!(r.ns_view(), None);
    }
}
