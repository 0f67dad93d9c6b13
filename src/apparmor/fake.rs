//! Test doubles for the kernel, compiled only into tests (`cfg(test)` or
//! the `test-util` feature, which a release build never has):
//! [`FakeTree`] writes a securityfs and procfs tree in the kernel's formats,
//! and [`FakeKernel`] is a recording [`Kernel`] whose loads compile with
//! the real `apparmor_parser` (compile only) and then mark the profile
//! loaded in such a tree.

use std::path::{Path, PathBuf};

use super::kernel::{Kernel, Replaced, SystemKernel};
use super::label::{Label, LabelError};
use super::parser::{Parser, ParserError, SHIPPED_FEATURES};
use super::securityfs::{mangle, KernelStatus, Root, SecurityfsError};
use super::userns_policy::UsernsPolicyError;

/// File in a fake securityfs directory that makes a `test-util` build use
/// [`FakeKernel`] for it (see [`super::select`]); a real securityfs
/// cannot hold it.
pub const MARKER: &str = ".aa-virt-fake-kernel";

/// A stand-in for the kernel: reads, unloads, namespaces and labels act on
/// a securityfs-like directory exactly as [`SystemKernel`] does on the real
/// one; a load compiles the profile with the real parser (compile only,
/// Debian's shipped features file) and, when that works, lists the profile
/// in `profiles` and keeps a copy of its `.files` as what the kernel now
/// enforces. Every load and unload is recorded, one line each, in a log
/// beside it, so tests can count loads even across processes. Loading
/// itself is proven in the integration VMs.
#[derive(Debug, Clone)]
pub struct FakeKernel {
    system: SystemKernel,
    fs: PathBuf,
}

impl FakeKernel {
    /// Make a fake kernel in directory `fs` (created): AppArmor available,
    /// nothing loaded.
    pub fn create(fs: &Path) -> std::io::Result<FakeKernel> {
        std::fs::create_dir_all(fs)?;
        if !fs.join("profiles").exists() {
            std::fs::write(fs.join("profiles"), "")?;
        }
        std::fs::write(fs.join(MARKER), "")?;
        let status = KernelStatus::Available {
            fs: fs.to_path_buf(),
        };
        Ok(FakeKernel {
            system: SystemKernel::with_status(status, Root::new(fs)),
            fs: fs.to_path_buf(),
        })
    }

    /// The fake kernel `system` points at, when its securityfs holds the
    /// [`MARKER`].
    pub fn detect(system: &SystemKernel) -> Option<FakeKernel> {
        let fs = system.securityfs()?;
        fs.join(MARKER).is_file().then(|| FakeKernel {
            system: system.clone(),
            fs: fs.to_path_buf(),
        })
    }

    /// The securityfs-like directory.
    pub fn securityfs(&self) -> &Path {
        &self.fs
    }

    fn log_path(&self) -> PathBuf {
        self.fs.join(format!("{MARKER}.log"))
    }

    fn fail_path(&self) -> PathBuf {
        self.fs.join(format!("{MARKER}.fail"))
    }

    fn record(&self, line: &str) {
        // Boot-load's threads and concurrent helpers record at once.
        let _ = crate::store::append_line(&self.log_path(), line);
    }

    /// Every recorded call, oldest first: `replace NAME PATH` (with
    /// ` --cache-loc DIR` before the path when the parser has a cache) and
    /// `remove NAME`.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many loads (replaces) were asked for.
    pub fn loads(&self) -> usize {
        self.calls()
            .iter()
            .filter(|l| l.starts_with("replace "))
            .count()
    }

    /// Forget the recorded calls.
    pub fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.log_path());
    }

    /// Make loads fail (true) or work (false), in every process using this
    /// fake.
    pub fn fail_loads(&self, fail: bool) -> std::io::Result<()> {
        if fail {
            std::fs::write(self.fail_path(), "")
        } else {
            match std::fs::remove_file(self.fail_path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
    }

    /// The generated rules (`.files`) the kernel was last given for `name`.
    pub fn loaded_files(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.loaded_files_path(name)).ok()
    }

    fn loaded_files_path(&self, name: &str) -> PathBuf {
        self.fs.join(format!("loaded.{name}.files"))
    }

    fn mark_loaded(&self, name: &str, profile: &Path) -> std::io::Result<()> {
        let list = self.fs.join("profiles");
        let text = std::fs::read_to_string(&list)?;
        let prefix = format!("{name} (");
        if !text.lines().any(|l| l.starts_with(&prefix)) {
            // 64 helpers may load at once.
            crate::store::append_line(&list, &format!("{name} (enforce)"))?;
        }
        let mut files = profile.as_os_str().to_owned();
        files.push(".files");
        let files_text = std::fs::read(&files).ok();
        if let Some(text) = &files_text {
            crate::store::write_atomic(&self.loaded_files_path(name), text, 0o644)
                .map_err(std::io::Error::other)?;
        }
        // Stands in for the kernel's hash of the compiled policy: it
        // changes when the loaded text changes, as the real one does.
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(std::fs::read(profile)?);
        h.update(files_text.unwrap_or_default());
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        crate::store::write_atomic(&self.hash_path(name), hex.as_bytes(), 0o644)
            .map_err(std::io::Error::other)
    }

    fn hash_path(&self, name: &str) -> PathBuf {
        self.fs.join(format!("loaded.{name}.sha256"))
    }

    /// Replace loaded profile `name` behind aa-virt's back (as a manual
    /// `apparmor_parser -r` would): its kernel hash changes.
    pub fn replace_behind_back(&self, name: &str) -> std::io::Result<()> {
        std::fs::write(self.hash_path(name), "replaced-by-hand")
    }
}

impl Kernel for FakeKernel {
    fn status(&self) -> &KernelStatus {
        self.system.status()
    }

    fn profile_mode(&self, name: &str) -> std::io::Result<Option<String>> {
        self.system.profile_mode(name)
    }

    fn replace(
        &self,
        parser: &Parser,
        name: &str,
        profile: &Path,
    ) -> Result<Replaced, ParserError> {
        // What it is compiled from, as the system kernel's load returns;
        // and what that kernel would report: the cache is used when its
        // record matches those inputs (this fake always compiles).
        let inputs = parser.load_digest(profile);
        let from_cache = parser.cache_matches(profile, inputs.as_deref());
        let cache = match &parser.cache {
            Some(c) => format!(" --cache-loc {}", c.display()),
            None => String::new(),
        };
        self.record(&format!("replace {name}{cache} {}", profile.display()));
        let rejected = |message: String| ParserError::Rejected {
            action: "replace",
            file: profile.display().to_string(),
            line: None,
            message,
        };
        if self.fail_path().exists() {
            return Err(rejected("AppArmor parser error: injected failure".into()));
        }
        let mut compile = parser.clone();
        compile.cache = None;
        compile.features = Some(PathBuf::from(SHIPPED_FEATURES));
        compile.check(profile).map_err(|e| match e {
            ParserError::Rejected { line, message, .. } => ParserError::Rejected {
                action: "replace",
                file: profile.display().to_string(),
                line,
                message,
            },
            other => other,
        })?;
        self.mark_loaded(name, profile)
            .map_err(|e| rejected(format!("fake kernel: {e}")))?;
        Ok(Replaced { inputs, from_cache })
    }

    fn remove_profile(&self, name: &str) -> std::io::Result<bool> {
        self.record(&format!("remove {name}"));
        self.system.remove_profile(name)
    }

    fn create_namespace(&self, ns: &str) -> Result<bool, SecurityfsError> {
        self.system.create_namespace(ns)
    }

    fn remove_namespace(&self, ns: &str) -> Result<bool, SecurityfsError> {
        self.system.remove_namespace(ns)
    }

    fn task_label(&self, pid: u32) -> Result<Label, LabelError> {
        self.system.task_label(pid)
    }

    fn policy_hash(&self, name: &str) -> Result<Option<String>, SecurityfsError> {
        if self.profile_mode(name).ok().flatten().is_none() {
            return Ok(None);
        }
        Ok(std::fs::read_to_string(self.hash_path(name))
            .ok()
            .map(|h| format!("sha256:{}", h.trim())))
    }

    fn close_userns_policy(&self) -> Result<bool, UsernsPolicyError> {
        let closed = self.system.close_userns_policy()?;
        if closed {
            self.record("close-userns-policy");
        }
        Ok(closed)
    }
}

/// Writes a securityfs + procfs tree in the kernel's exact formats under a
/// directory, for tests of everything that reads a [`Root`].
#[derive(Debug)]
pub struct FakeTree {
    root: PathBuf,
    profiles: Vec<String>,
    next_id: u32,
}

impl FakeTree {
    /// A tree at `root` with AppArmor enabled and nothing loaded.
    pub fn new(root: &Path) -> std::io::Result<FakeTree> {
        let t = FakeTree {
            root: root.to_path_buf(),
            profiles: Vec::new(),
            next_id: 1,
        };
        let aa = t.aa();
        std::fs::create_dir_all(root.join("sys/module/apparmor/parameters"))?;
        std::fs::write(root.join("sys/module/apparmor/parameters/enabled"), "Y\n")?;
        std::fs::create_dir_all(aa.join("policy/profiles"))?;
        std::fs::create_dir_all(aa.join("policy/namespaces"))?;
        std::fs::write(aa.join(".ns_stacked"), "no\n")?;
        std::fs::write(aa.join(".ns_name"), "root\n")?;
        std::fs::write(aa.join(".ns_level"), "0\n")?;
        t.flush()?;
        Ok(t)
    }

    fn aa(&self) -> PathBuf {
        self.root.join("sys/kernel/security/apparmor")
    }

    fn flush(&self) -> std::io::Result<()> {
        let mut s = String::new();
        for l in &self.profiles {
            s.push_str(l);
            s.push('\n');
        }
        std::fs::write(self.aa().join("profiles"), s)
    }

    fn profile_dir(&mut self, parent: &Path, name: &str, mode: &str) -> std::io::Result<()> {
        let d = parent.join(format!("{}.{}", mangle(name), self.next_id));
        self.next_id += 1;
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("name"), format!("{name}\n"))?;
        std::fs::write(d.join("mode"), format!("{mode}\n"))?;
        std::fs::write(d.join("attach"), format!("{name}\n"))?;
        Ok(())
    }

    /// Load profile `name` in the root namespace with `mode`.
    pub fn load(&mut self, name: &str, mode: &str) -> std::io::Result<&mut Self> {
        self.profiles.push(format!("{name} ({mode})"));
        let dir = self.aa().join("policy/profiles");
        self.profile_dir(&dir, name, mode)?;
        self.flush()?;
        Ok(self)
    }

    /// Create policy namespace `ns` (like `mkdir policy/namespaces/<ns>`).
    pub fn namespace(&mut self, ns: &str) -> std::io::Result<&mut Self> {
        let d = self.aa().join("policy/namespaces").join(ns);
        std::fs::create_dir_all(d.join("profiles"))?;
        std::fs::create_dir_all(d.join("namespaces"))?;
        Ok(self)
    }

    /// Load profile `name` inside namespace `ns` (created if missing).
    pub fn load_in(&mut self, ns: &str, name: &str, mode: &str) -> std::io::Result<&mut Self> {
        self.namespace(ns)?;
        self.profiles.push(format!(":{ns}:{name} ({mode})"));
        let dir = self
            .aa()
            .join("policy/namespaces")
            .join(ns)
            .join("profiles");
        self.profile_dir(&dir, name, mode)?;
        self.flush()?;
        Ok(self)
    }

    /// A process `pid` whose label reads `label` (e.g. `unconfined` or
    /// `libvirt-<uuid> (enforce)`), in `attr/apparmor/current` and, like
    /// the kernel when AppArmor is the displayed LSM, `attr/current`.
    pub fn process(&mut self, pid: u32, label: &str) -> std::io::Result<&mut Self> {
        let d = self.root.join("proc").join(pid.to_string()).join("attr");
        std::fs::create_dir_all(d.join("apparmor"))?;
        std::fs::write(d.join("apparmor/current"), format!("{label}\n"))?;
        std::fs::write(d.join("current"), format!("{label}\n"))?;
        Ok(self)
    }

    /// A process with only the legacy `attr/current` (older kernels).
    pub fn legacy_process(&mut self, pid: u32, label: &str) -> std::io::Result<&mut Self> {
        let d = self.root.join("proc").join(pid.to_string()).join("attr");
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("current"), format!("{label}\n"))?;
        Ok(self)
    }
}
