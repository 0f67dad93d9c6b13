//! `aa-virt install` and `aa-virt uninstall`: put the libvirt hook, aa-virt's
//! own AppArmor profile, the abstractions, the daemon overrides and the
//! default configuration in place, and take them away again.
//!
//! Install is idempotent and never overwrites a file an admin edited: it
//! records what it wrote (path and content hash) in
//! `/var/lib/aa-virt/installed.json`, and updates a file only when it still
//! holds what aa-virt wrote. Uninstall removes exactly those files, and only
//! when they are unchanged; anything else is kept and reported. All writes
//! of one run form a transaction: when the resulting policy does not
//! compile or load, every file is put back as it was.
//!
//! The daemon profiles Debian ships (`usr.sbin.libvirtd`, and
//! `usr.sbin.virtqemud` on newer libvirt) deny running `apparmor_parser`
//! and writing `/etc/apparmor.d/libvirt/`, and the hook inherits the
//! daemon's profile. aa-virt therefore ships a profile of its own and a
//! snippet per daemon, `local/<daemon>.aa-virt`, with one rule that execs
//! aa-virt under it (`Px`); the daemon's `local/<daemon>` file, which the
//! shipped profile includes, gets a two-line include block for it.
//!
//! Two modes: in hook mode (the default) libvirt runs the hook script and
//! aa-virt writes the profiles from it; in helper mode there is no hook and
//! libvirt's `virt-aa-helper` is diverted (see [`divert`]) so that libvirt
//! runs aa-virt in its place. Switching mode, or uninstalling, undoes what
//! the other mode set up.

pub mod divert;
mod run;

use run::{Retire, Run, RETIRE_BOOT, RETIRE_HOOK};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::apparmor::{install_profile, Kernel, LoadError, LoadWhen, Parser, ParserError};
use crate::config::{self, Config};
use crate::libvirt::naming;
use crate::policy::{self, Pattern, TemplateError, Templates};
use crate::store::{StoreError, Txn};

/// The hook script shipped in `libvirt-hooks/qemu`.
pub const HOOK_SCRIPT: &str = include_str!("../libvirt-hooks/qemu");

/// Where the hook goes (libvirt runs every script in `qemu.d/` since 6.5).
pub const HOOK_PATH: &str = "etc/libvirt/hooks/qemu.d/aa-virt";

/// The boot unit that loads every guest's policy before libvirt starts
/// (`@AA_VIRT@` stands for aa-virt's path).
pub const BOOT_UNIT: &str = include_str!("../packaging/systemd/aa-virt-load.service");

/// The drop-in that makes each daemon want the boot unit.
pub const BOOT_DROPIN: &str = include_str!("../packaging/systemd/aa-virt-load.conf");

/// The daemons whose start pulls in the boot unit (it is ordered before each).
pub const BOOT_DAEMONS: &[&str] = &["libvirtd", "virtqemud", "lxc"];

/// aa-virt's own profile file.
pub const PROFILE_PATH: &str = "etc/apparmor.d/usr.bin.aa-virt";

/// aa-virt's own profile name.
pub const PROFILE_NAME: &str = "aa-virt";

/// The install record.
pub const MANIFEST_PATH: &str = "var/lib/aa-virt/installed.json";

/// The daemon profiles that run the hook.
pub const DAEMONS: &[&str] = &["usr.sbin.libvirtd", "usr.sbin.virtqemud"];

/// First line of the include block added to a daemon's `local/` file.
const BLOCK_MARK: &str =
    "# aa-virt: run the libvirt hook under aa-virt's profile (aa-virt uninstall removes these two lines)";

/// Install errors; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file could not be written or removed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The aa-virt binary path cannot be used in the hook or a rule.
    #[error("aa-virt binary {0:?}: {1} (pass --bin with a plain absolute path)")]
    Exe(String, String),
    /// The install record is corrupt.
    #[error("{path}: {message} (move it away to let install start afresh)")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The policy does not compile or load; nothing was changed.
    #[error("{what}: {source}; every file was restored")]
    Policy {
        /// Which profile.
        what: String,
        /// The parser's complaint.
        source: ParserError,
    },
    /// Helper mode cannot replace libvirt's helper; nothing was changed.
    #[error("{path}: {message}; nothing was changed")]
    Helper {
        /// The helper path.
        path: String,
        /// Why, and what to do.
        message: String,
    },
    /// The symlink to aa-virt could not be made at the helper path.
    #[error("cannot put a symlink to aa-virt at {path}: {source}")]
    Link {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// dpkg-divert failed.
    #[error("{command}: {message}")]
    Divert {
        /// The dpkg-divert arguments.
        command: String,
        /// dpkg-divert's complaint.
        message: String,
    },
    /// Unloading aa-virt's profile failed.
    #[error("cannot unload profile {PROFILE_NAME}: {0}")]
    Unload(std::io::Error),
}

/// What to install where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The root of the target system (`/`; a temp dir in tests).
    pub root: PathBuf,
    /// The aa-virt binary as the target system sees it.
    pub exe: PathBuf,
    /// How libvirt runs aa-virt (install only; uninstall removes both).
    pub mode: Mode,
}

/// How libvirt runs aa-virt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// libvirt runs the hook script /etc/libvirt/hooks/qemu.d/aa-virt, which runs aa-virt.
    #[default]
    Hook,
    /// No hook: libvirt's /usr/lib/libvirt/virt-aa-helper is diverted (dpkg-divert --local --rename, to virt-aa-helper.real) and replaced by a symlink to aa-virt, which libvirt then runs as its helper.
    Helper,
}

impl Options {
    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// How a target path is shown: as the target system sees it.
    fn show(&self, p: &Path) -> String {
        match p.strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => p.display().to_string(),
        }
    }
}

/// The install record.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    /// Target path (`/etc/...`) → FNV-1a 64 of the content aa-virt wrote.
    files: BTreeMap<String, String>,
    /// `local/<daemon>` files that got the include block.
    includes: Vec<String>,
    /// The mode of the last install.
    #[serde(default)]
    mode: Mode,
    /// Helper mode's diversion of libvirt's helper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    diversion: Option<divert::Diversion>,
}

/// FNV-1a, 64 bit: enough to tell "still what we wrote" from "edited".
fn digest(b: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn read_opt(p: &Path) -> Result<Option<Vec<u8>>, InstallError> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstallError::Read {
            path: p.to_path_buf(),
            source,
        }),
    }
}

fn load_manifest(o: &Options) -> Result<Option<Manifest>, InstallError> {
    let p = o.at(MANIFEST_PATH);
    match read_opt(&p)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| InstallError::Manifest {
                path: p,
                message: e.to_string(),
            }),
    }
}

/// One file aa-virt installs.
struct Item {
    path: PathBuf,
    content: String,
    mode: u32,
    /// Only created, never updated (the configuration).
    create_only: bool,
    /// Not wanted in this setup: install removes the copy it once wrote
    /// (when unchanged) instead of writing it; uninstall treats it as usual.
    retire: Option<Retire>,
}

/// The boot unit as the Debian package installs it (`/lib` on Debian 12,
/// the same file through the `/lib -> usr/lib` link on merged-/usr hosts).
pub const PACKAGED_BOOT_UNIT: &str = "lib/systemd/system/aa-virt-load.service";

/// Everything install writes, rendered for this binary and configuration.
fn items(o: &Options, templates: &Templates, cfg: &Config) -> Result<Vec<Item>, InstallError> {
    let exe = o.exe.to_string_lossy().into_owned();
    if !exe.starts_with('/') {
        return Err(InstallError::Exe(exe, "not an absolute path".into()));
    }
    if exe.chars().any(|c| c.is_control() || c == '\'') {
        return Err(InstallError::Exe(
            exe,
            "contains a quote or control character".into(),
        ));
    }
    let mut hook = String::new();
    let mut found = false;
    for line in HOOK_SCRIPT.lines() {
        if line.starts_with("AA_VIRT=") && !found {
            hook.push_str(&format!("AA_VIRT='{exe}'\n"));
            found = true;
        } else {
            hook.push_str(line);
            hook.push('\n');
        }
    }
    if !found {
        return Err(InstallError::Exe(
            exe,
            "libvirt-hooks/qemu has no AA_VIRT= line to point at it".into(),
        ));
    }
    let exe_rule = Pattern::path(&o.exe).render();
    let cache = Pattern::path(&cfg.cache_dir).lit("/");
    #[derive(Serialize)]
    struct Ctx {
        abi: &'static str,
        exe: String,
        cache_dir: String,
        cache_files: String,
    }
    let ctx = Ctx {
        abi: policy::abi::choose(policy::abi::ProfileKind::AaVirt, templates.host())
            .abi
            .version(),
        exe: exe_rule,
        cache_dir: cache.render(),
        cache_files: cache.glob("**").render(),
    };
    let mut v = vec![Item {
        path: o.at(HOOK_PATH),
        content: hook,
        mode: 0o755,
        create_only: false,
        retire: (o.mode == Mode::Helper).then_some(RETIRE_HOOK),
    }];
    let boot = o.at(PACKAGED_BOOT_UNIT).is_file().then_some(RETIRE_BOOT);
    v.push(Item {
        path: o.at("etc/systemd/system/aa-virt-load.service"),
        content: BOOT_UNIT.replace("@AA_VIRT@", &exe),
        mode: 0o644,
        create_only: false,
        retire: boot,
    });
    for d in BOOT_DAEMONS {
        v.push(Item {
            path: o.at(&format!(
                "etc/systemd/system/{d}.service.d/aa-virt-load.conf"
            )),
            content: BOOT_DROPIN.to_string(),
            mode: 0o644,
            create_only: false,
            retire: boot,
        });
    }
    for (rel, _) in policy::template::ABSTRACTIONS {
        v.push(Item {
            path: o.at(&format!("etc/apparmor.d/{rel}")),
            content: templates.abstraction(rel)?,
            mode: 0o644,
            create_only: false,
            retire: None,
        });
    }
    v.push(Item {
        path: o.at(PROFILE_PATH),
        content: templates.render_with("apparmor.d/usr.bin.aa-virt.hbs", &ctx)?,
        mode: 0o644,
        create_only: false,
        retire: None,
    });
    let snippet = templates.render_with("apparmor.d/local/daemon.aa-virt.hbs", &ctx)?;
    for d in DAEMONS {
        if o.at(&format!("etc/apparmor.d/{d}")).exists() {
            v.push(Item {
                path: o.at(&format!("etc/apparmor.d/local/{d}.aa-virt")),
                content: snippet.clone(),
                mode: 0o644,
                create_only: false,
                retire: None,
            });
        }
    }
    v.push(Item {
        path: o.at(config::DEFAULT_PATH.trim_start_matches('/')),
        content: config::DEFAULT_TEXT.to_string(),
        mode: 0o644,
        create_only: true,
        retire: None,
    });
    Ok(v)
}

fn block(daemon: &str) -> String {
    format!("{BLOCK_MARK}\ninclude if exists <local/{daemon}.aa-virt>\n")
}

/// The result of a run: one line per thing looked at.
#[derive(Debug, Default)]
pub struct Report {
    /// Human-readable lines, in order.
    pub lines: Vec<String>,
    /// Whether anything changed.
    pub changed: bool,
}

impl Report {
    fn say(&mut self, changed: bool, line: String) {
        self.changed |= changed;
        self.lines.push(line);
    }
}

/// Install (or bring up to date) everything the chosen mode needs, and
/// undo what the other mode set up. Every step writes through one
/// transaction: any failure restores every file.
pub fn install(
    o: &Options,
    templates: &Templates,
    parser: &Parser,
    kernel: &dyn Kernel,
) -> Result<Report, InstallError> {
    let cfg_path = o.at(config::DEFAULT_PATH.trim_start_matches('/'));
    let cfg = Config::load(&cfg_path)?;
    let mut run = Run::start(o)?;
    let items = items(o, templates, &cfg)?;
    // Helper mode: whether libvirt's helper can be diverted, before any
    // file is written.
    let plan = match o.mode {
        Mode::Helper => Some(divert::plan(o, run.old.diversion.as_ref())?),
        Mode::Hook => None,
    };
    run.write_files(items)?;
    run.include_in_daemons()?;
    create_cache_dir(o, &cfg)?;
    run.prove_policy(parser, kernel)?;
    let diverted_now = run.switch_helper(plan.as_ref())?;
    run.write_manifest(diverted_now.as_ref())?;
    Ok(run.finish())
}

/// The compiled-policy cache directory from the configuration.
fn create_cache_dir(o: &Options, cfg: &Config) -> Result<(), InstallError> {
    std::fs::create_dir_all(o.at(cfg.cache_dir.to_string_lossy().trim_start_matches('/'))).map_err(
        |source| InstallError::Read {
            path: cfg.cache_dir.clone(),
            source,
        },
    )
}

/// A failed load of `path`, as an install error naming it.
fn load_error(o: &Options, path: &Path, e: LoadError) -> InstallError {
    match e {
        LoadError::Store(e) => e.into(),
        LoadError::Parser(source) => InstallError::Policy {
            what: o.show(path),
            source,
        },
    }
}

/// Remove what [`install`] added, keeping (and reporting) anything edited
/// since.
pub fn uninstall(
    o: &Options,
    templates: &Templates,
    parser: &Parser,
    kernel: &dyn Kernel,
) -> Result<Report, InstallError> {
    let cfg_path = o.at(config::DEFAULT_PATH.trim_start_matches('/'));
    let cfg = Config::load(&cfg_path).unwrap_or_default();
    let manifest = load_manifest(o)?;
    let have_manifest = manifest.is_some();
    let mut rep = Report::default();
    if manifest.is_none() {
        rep.say(
            false,
            format!(
                "note: no {}: removing only files identical to what this aa-virt installs",
                o.show(&o.at(MANIFEST_PATH))
            ),
        );
    }
    let manifest = manifest.unwrap_or_default();
    // Helper mode first: libvirt stops running aa-virt as its helper before
    // aa-virt's profile goes away. When this fails, nothing was changed.
    if let Some(d) = &manifest.diversion {
        divert::undo(o, d, &mut rep)?;
    }
    let mut txn = Txn::new();
    let mut touched_daemons = Vec::new();

    // Include blocks first: the daemons must stop pointing at aa-virt's
    // profile before it goes away.
    let mut locals: Vec<PathBuf> = manifest
        .includes
        .iter()
        .map(|s| o.at(s.trim_start_matches('/')))
        .collect();
    for d in DAEMONS {
        let p = o.at(&format!("etc/apparmor.d/local/{d}"));
        if !locals.contains(&p) {
            locals.push(p);
        }
    }
    for local in &locals {
        let Some(cur) = read_opt(local)? else {
            continue;
        };
        let text = String::from_utf8_lossy(&cur).into_owned();
        let Some(d) = DAEMONS.iter().find(|d| text.contains(&block(d))) else {
            continue;
        };
        let t = text.replacen(&block(d), "", 1);
        txn.write_if_changed(local, t.as_bytes(), 0o644)?;
        rep.say(
            true,
            format!("updated   {} (include removed)", o.show(local)),
        );
        touched_daemons.push(*d);
    }

    let guests = guest_profiles(o);
    for it in items(o, templates, &cfg)? {
        let shown = o.show(&it.path);
        let Some(cur) = read_opt(&it.path)? else {
            continue;
        };
        let ours = if have_manifest {
            manifest.files.get(&shown) == Some(&digest(&cur))
        } else {
            cur == it.content.as_bytes()
        };
        if !ours && have_manifest && !manifest.files.contains_key(&shown) {
            rep.say(
                false,
                format!("kept      {shown}: not installed by aa-virt install"),
            );
            continue;
        }
        if !ours {
            rep.say(
                false,
                format!("kept      {shown}: changed since aa-virt installed it (or not aa-virt's); remove it yourself if you no longer need it"),
            );
            continue;
        }
        if it.path.starts_with(o.at("etc/apparmor.d/abstractions")) && guests > 0 {
            rep.say(
                false,
                format!("kept      {shown}: {guests} guest profile(s) in /etc/apparmor.d/libvirt include it"),
            );
            continue;
        }
        txn.remove(&it.path)?;
        rep.say(true, format!("removed   {shown}"));
    }
    txn.remove(&o.at(MANIFEST_PATH))?;

    if o.is_live() && kernel.status().is_available() {
        for d in &touched_daemons {
            let path = o.at(&format!("etc/apparmor.d/{d}"));
            install_profile(kernel, parser, &mut txn, d, &path, &[], LoadWhen::Always)
                .map_err(|e| load_error(o, &path, e))?;
            rep.say(true, format!("reloaded  {}", o.show(&path)));
        }
        if kernel
            .remove_profile(PROFILE_NAME)
            .map_err(InstallError::Unload)?
        {
            rep.say(true, format!("unloaded  profile {PROFILE_NAME}"));
        }
    }
    txn.commit();
    // Directories install made, when empty (never anything with content).
    let cache = o.at(cfg.cache_dir.to_string_lossy().trim_start_matches('/'));
    let dropin_dirs = BOOT_DAEMONS
        .iter()
        .map(|d| o.at(&format!("etc/systemd/system/{d}.service.d")));
    for dir in [
        o.at("etc/aa-virt"),
        o.at("var/lib/aa-virt"),
        o.at("etc/libvirt/hooks/qemu.d"),
        cache.clone(),
        cache.parent().map(Path::to_path_buf).unwrap_or_default(),
    ]
    .into_iter()
    .chain(dropin_dirs)
    {
        let _ = std::fs::remove_dir(dir);
    }
    if guests > 0 {
        rep.say(
            false,
            format!("note: {guests} guest profile(s) stay in /etc/apparmor.d/libvirt (running guests use them)"),
        );
    }
    Ok(rep)
}

/// How many guest profiles (not `.files`, not libvirt's templates) exist.
fn guest_profiles(o: &Options) -> usize {
    std::fs::read_dir(o.at("etc/apparmor.d/libvirt"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(naming::PREFIX) && !n.ends_with(naming::FILES_SUFFIX)
                })
                .count()
        })
        .unwrap_or(0)
}

/// The running binary, for `--bin`'s default.
pub fn current_exe() -> Result<PathBuf, InstallError> {
    std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| InstallError::Exe("(current executable)".into(), e.to_string()))
}
