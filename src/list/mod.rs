//! `aa-virt list` and `aa-virt status`: every guest's real confinement.
//!
//! One pass gathers, concurrently (one blocking task each): every libvirt
//! URI's domains (name, UUID, id, state, libvirt's security label), every
//! lxcpath's containers (state, init pid, configured label), the kernel's
//! loaded profiles and namespaces, the list of generated `.files`, and one
//! pass over the audit log. Each guest is then assessed against what it
//! should be: profile `libvirt-<uuid>` (QEMU) or the configured stacked
//! label (LXC), loaded, in enforce mode, and the process really running
//! under it. No per-guest process is spawned and no domain XML is read.

pub mod denials;
pub mod output;
pub mod status;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::apparmor::securityfs::LoadedProfiles;
use crate::apparmor::{process_label, KernelStatus, Label, Mode, Root};
use crate::guest::GuestKind;
use crate::libvirt::conn::{self, Conn, DomainInfo, SecurityModel};
use crate::libvirt::naming;
use crate::libvirt::profile::Layout;
use crate::lxc::sys::{self as lxc, Container};
use crate::policy::files;

pub use denials::LogChoice;

/// Version of the JSON document (`docs/list.schema.json`). Bumped only for
/// incompatible changes; fields may be added within a version.
pub const SCHEMA_VERSION: u32 = 1;

/// The URI used when no `--connect` is given (and `LIBVIRT_DEFAULT_URI` is
/// unset).
pub const DEFAULT_URI: &str = "qemu:///system";

/// Errors of `list` and `status`.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// No guest of that name or UUID.
    #[error("no guest named {0:?} in {1}")]
    NotFound(String, String),
    /// The name is ambiguous.
    #[error("{name:?} names {count} guests ({where_}); give the UUID, or narrow with --connect / --lxcpath")]
    Ambiguous {
        /// The name.
        name: String,
        /// How many.
        count: usize,
        /// Where they are.
        where_: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the task runtime: {0}")]
    Runtime(std::io::Error),
}

/// What to list and where to look.
#[derive(Debug, Clone)]
pub struct Options {
    /// libvirt URIs to query.
    pub uris: Vec<String>,
    /// The URIs are the built-in default: a failure to connect is a note,
    /// not an error (a host without libvirt still lists its containers).
    pub default_uris: bool,
    /// LXC container directories.
    pub lxcpaths: Vec<PathBuf>,
    /// Where `/sys` and `/proc` are (`/` in production).
    pub root: Root,
    /// Where aa-virt's libvirt policy files are.
    pub layout: Layout,
    /// Where aa-virt's LXC profiles are.
    pub lxc_layout: crate::lxc::Layout,
    /// Which log to read denials from.
    pub log: LogChoice,
}

impl Options {
    /// The defaults: the local system's libvirt and LXC's configured
    /// lxcpath, the real root, the standard layout and the auto-chosen log.
    pub fn system() -> Options {
        Options {
            uris: vec![std::env::var("LIBVIRT_DEFAULT_URI")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_URI.to_string())],
            default_uris: true,
            lxcpaths: vec![lxc::default_lxcpath()],
            root: Root::system(),
            layout: Layout::default(),
            lxc_layout: crate::lxc::Layout::default(),
            log: LogChoice::Auto,
        }
    }
}

/// The kernel side of the report.
#[derive(Debug, Clone, Serialize)]
pub struct AppArmorInfo {
    /// AppArmor is enabled and securityfs is readable.
    pub available: bool,
    /// Why not, when it is not.
    pub reason: Option<String>,
    /// Number of loaded profiles (all namespaces the caller sees).
    pub profiles_loaded: Option<usize>,
    /// This host is itself a stacked container.
    pub ns_stacked: Option<bool>,
}

/// Where denials came from.
#[derive(Debug, Clone, Serialize)]
pub struct DenialInfo {
    /// The log read (`/var/log/audit/audit.log`, `journalctl -k`, ...).
    pub source: Option<String>,
    /// Why none was read.
    pub note: Option<String>,
}

/// One place guests were listed from.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    /// `libvirt` or `lxc`.
    pub kind: &'static str,
    /// The URI or lxcpath.
    pub location: String,
    /// It is this host (so the kernel columns apply).
    pub local: bool,
    /// Listing worked.
    pub ok: bool,
    /// How many guests it has.
    pub guests: usize,
    /// libvirt's primary security driver.
    pub security_model: Option<String>,
    /// What failed.
    pub error: Option<String>,
    /// A failure that is not an error (no daemon behind the default URI).
    pub note: Option<String>,
}

/// One guest's confinement.
#[derive(Debug, Clone, Serialize)]
pub struct GuestRow {
    /// Name.
    pub name: String,
    /// `qemu` or `lxc`.
    pub kind: GuestKind,
    /// The URI or lxcpath it comes from.
    pub source: String,
    /// UUID (libvirt).
    pub uuid: Option<String>,
    /// State word (`running`, `shut off`, `stopped`, ...).
    pub state: String,
    /// It has processes that must be confined.
    pub active: bool,
    /// The process whose label is checked (QEMU, or the container's init).
    pub pid: Option<u32>,
    /// The profile it should run under (`libvirt-<uuid>`, or the host-side
    /// profile of the container's label).
    pub profile: Option<String>,
    /// The full label it should run under.
    pub expected_label: Option<String>,
    /// The profile is loaded (`None`: cannot be known here).
    pub loaded: Option<bool>,
    /// The loaded profile's mode.
    pub mode: Option<String>,
    /// The label the process runs under, without mode.
    pub label: Option<String>,
    /// The mode the kernel reports with that label (`enforce`, `mixed`, ...).
    pub label_mode: Option<String>,
    /// Where the label was read: `procfs` or `libvirt`.
    pub label_source: Option<&'static str>,
    /// The label is the expected one, in enforce mode.
    pub label_ok: Option<bool>,
    /// The policy namespace the label stacks into.
    pub namespace: Option<String>,
    /// That namespace exists.
    pub namespace_exists: Option<bool>,
    /// Profiles loaded inside it.
    pub namespace_profiles: Option<usize>,
    /// Rules aa-virt generated for it.
    pub rules: Option<usize>,
    /// The file they were counted in.
    pub rules_file: Option<String>,
    /// Denials attributed to it in the log.
    pub denials: Option<usize>,
    /// Verdict for an active guest: confined exactly as expected.
    pub confined: Option<bool>,
    /// What is wrong, one sentence each.
    pub problems: Vec<String>,
}

/// The whole listing.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The kernel.
    pub apparmor: AppArmorInfo,
    /// The log.
    pub denials: DenialInfo,
    /// Where guests were listed from.
    pub sources: Vec<SourceInfo>,
    /// The guests, libvirt first (by source, then name), then LXC.
    pub guests: Vec<GuestRow>,
}

impl Report {
    /// Active guests that are not confined as expected.
    pub fn unconfined(&self) -> impl Iterator<Item = &GuestRow> {
        self.guests
            .iter()
            .filter(|g| g.active && g.confined != Some(true))
    }

    /// Sources that failed (excluding tolerated notes).
    pub fn errors(&self) -> impl Iterator<Item = &SourceInfo> {
        self.sources.iter().filter(|s| s.error.is_some())
    }
}

/// What the kernel says, read once.
struct Kernel {
    status: KernelStatus,
    profiles: Option<LoadedProfiles>,
    profiles_error: Option<String>,
    ns_stacked: Option<bool>,
}

impl Kernel {
    fn read(root: &Root) -> Kernel {
        let status = root.kernel_status();
        let (mut profiles, mut profiles_error, mut ns_stacked) = (None, None, None);
        if status.is_available() {
            match root.profiles() {
                Ok(p) => profiles = Some(p),
                Err(e) => profiles_error = Some(e.to_string()),
            }
            ns_stacked = root.ns_view().map(|v| v.stacked);
        }
        Kernel {
            status,
            profiles,
            profiles_error,
            ns_stacked,
        }
    }

    /// Why kernel facts are missing, if they are.
    fn unavailable(&self) -> Option<String> {
        match &self.status {
            KernelStatus::Unavailable(r) => Some(format!("AppArmor not available: {r}")),
            KernelStatus::Available { .. } => self.profiles_error.clone(),
        }
    }
}

type LibvirtResult = Result<(Vec<DomainInfo>, Option<SecurityModel>), conn::ConnError>;

fn query_libvirt(uri: &str) -> LibvirtResult {
    let c = Conn::open(uri)?;
    let domains = c.domains(true)?;
    let model = c.security_model().ok();
    c.close()?;
    Ok((domains, model))
}

/// The names of the `.files` present in the libvirt policy directory.
fn files_present(layout: &Layout) -> HashSet<String> {
    std::fs::read_dir(layout.libvirt_dir())
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(naming::FILES_SUFFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// Gather everything, concurrently. `keep` selects log records to keep in
/// full (for `status`).
pub fn gather(
    opts: &Options,
    keep: impl Fn(&denials::Record) -> bool + Send + 'static,
) -> Result<(Report, denials::Summary), ListError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(ListError::Runtime)?;
    let (lv, lx, kernel, summary, present) = rt.block_on(async {
        let lv: Vec<_> = opts
            .uris
            .iter()
            .map(|u| {
                let u = u.clone();
                tokio::task::spawn_blocking(move || query_libvirt(&u))
            })
            .collect();
        let lx: Vec<_> = opts
            .lxcpaths
            .iter()
            .map(|p| {
                let p = p.clone();
                tokio::task::spawn_blocking(move || lxc::list(&p))
            })
            .collect();
        let root = opts.root.clone();
        let kernel = tokio::task::spawn_blocking(move || Kernel::read(&root));
        let (log, rootp) = (opts.log.clone(), opts.root.path().to_path_buf());
        let summary = tokio::task::spawn_blocking(move || denials::read(&log, &rootp, &keep));
        let layout = opts.layout.clone();
        let present = tokio::task::spawn_blocking(move || files_present(&layout));
        let mut lv_out = Vec::new();
        for h in lv {
            lv_out.push(h.await);
        }
        let mut lx_out = Vec::new();
        for h in lx {
            lx_out.push(h.await);
        }
        (lv_out, lx_out, kernel.await, summary.await, present.await)
    });
    let join = |e: tokio::task::JoinError| format!("internal error: a listing task failed: {e}");
    let kernel = kernel.unwrap_or_else(|e| Kernel {
        status: KernelStatus::Unavailable(join(e)),
        profiles: None,
        profiles_error: None,
        ns_stacked: None,
    });
    let summary = summary.unwrap_or_else(|e| denials::Summary {
        note: Some(join(e)),
        ..Default::default()
    });
    let present = present.unwrap_or_default();

    let ctx = Ctx {
        opts,
        kernel: &kernel,
        summary: &summary,
        present: &present,
    };
    let mut sources = Vec::new();
    let mut guests = Vec::new();
    for (uri, res) in opts.uris.iter().zip(lv) {
        let local = conn::is_local_uri(uri);
        let mut si = SourceInfo {
            kind: "libvirt",
            location: uri.clone(),
            local,
            ok: false,
            guests: 0,
            security_model: None,
            error: None,
            note: None,
        };
        let res = match res {
            Err(e) => Err((join(e), false)),
            Ok(Err(e)) => Err((e.to_string(), matches!(e, conn::ConnError::Connect { .. }))),
            Ok(Ok(v)) => Ok(v),
        };
        match res {
            Ok((doms, model)) => {
                si.ok = true;
                si.guests = doms.len();
                si.security_model = model.map(|m| m.model);
                for d in &doms {
                    guests.push(ctx.qemu(uri, local, si.security_model.as_deref(), d));
                }
            }
            // A default URI with nothing behind it is a note.
            Err((e, true)) if opts.default_uris => {
                si.note = Some(format!(
                    "{e}; no libvirt guests listed (give --connect URI to query another host)"
                ));
            }
            Err((e, _)) => si.error = Some(e),
        }
        sources.push(si);
    }
    for (path, res) in opts.lxcpaths.iter().zip(lx) {
        let mut si = SourceInfo {
            kind: "lxc",
            location: path.display().to_string(),
            local: true,
            ok: false,
            guests: 0,
            security_model: None,
            error: None,
            note: None,
        };
        match res.map_err(join).and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(cts) => {
                si.ok = true;
                si.guests = cts.len();
                for c in &cts {
                    guests.push(ctx.lxc(c));
                }
            }
            Err(e) => si.error = Some(e),
        }
        sources.push(si);
    }
    let report = Report {
        schema_version: SCHEMA_VERSION,
        apparmor: AppArmorInfo {
            available: kernel.status.is_available(),
            reason: match &kernel.status {
                KernelStatus::Unavailable(r) => Some(r.clone()),
                KernelStatus::Available { .. } => kernel.profiles_error.clone(),
            },
            profiles_loaded: kernel.profiles.as_ref().map(LoadedProfiles::len),
            ns_stacked: kernel.ns_stacked,
        },
        denials: DenialInfo {
            source: summary.source.as_ref().map(|s| s.to_string()),
            note: summary.note.clone(),
        },
        sources,
        guests,
    };
    Ok((report, summary))
}

/// Gather and assess every guest (see [`gather`]).
pub fn list(opts: &Options) -> Result<Report, ListError> {
    gather(opts, |_| false).map(|(r, _)| r)
}

struct Ctx<'a> {
    opts: &'a Options,
    kernel: &'a Kernel,
    summary: &'a denials::Summary,
    present: &'a HashSet<String>,
}

fn mode_str(m: Option<&Mode>) -> Option<String> {
    m.map(|m| m.as_str().to_string())
}

impl Ctx<'_> {
    /// Where libvirt keeps a running QEMU's pid file, for local URIs of the
    /// QEMU driver.
    fn qemu_pid(&self, uri: &str, name: &str) -> Option<u32> {
        let rest = uri.split_once("://")?.1;
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
        let path = path.split('?').next().unwrap_or("");
        if !uri.starts_with("qemu") {
            return None;
        }
        let dir = match path {
            "system" => self.opts.root.path().join("run/libvirt/qemu"),
            "session" => {
                PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?).join("libvirt/qemu/run")
            }
            _ => return None,
        };
        let text = std::fs::read_to_string(dir.join(format!("{name}.pid"))).ok()?;
        text.trim().parse().ok()
    }

    fn rules_of(&self, path: &Path) -> Option<usize> {
        std::fs::read_to_string(path).ok().map(|t| files::count(&t))
    }

    fn qemu(&self, uri: &str, local: bool, model: Option<&str>, d: &DomainInfo) -> GuestRow {
        let profile = naming::profile_name(&d.uuid);
        let files_name = naming::files_name(&profile);
        let files_path = self.opts.layout.files_path(&profile);
        let rules = if local && self.present.contains(&files_name) {
            self.rules_of(&files_path)
        } else {
            None
        };
        let mut g = GuestRow {
            name: d.name.clone(),
            kind: GuestKind::Qemu,
            source: uri.to_string(),
            uuid: Some(d.uuid.hyphenated().to_string()),
            state: d.state.as_str().to_string(),
            active: d.is_active(),
            pid: None,
            profile: Some(profile.clone()),
            expected_label: Some(profile.clone()),
            loaded: None,
            mode: None,
            label: None,
            label_mode: None,
            label_source: None,
            label_ok: None,
            namespace: None,
            namespace_exists: None,
            namespace_profiles: None,
            rules_file: rules.map(|_| files_path.display().to_string()),
            rules,
            denials: local
                .then_some(self.summary.source.as_ref())
                .flatten()
                .map(|_| self.summary.denials_of(None, &profile)),
            confined: None,
            problems: Vec::new(),
        };
        let expected = Label::profile(&profile);
        let libvirt_label = d.label.as_ref();
        if local {
            if let Some(why) = self.kernel.unavailable() {
                if g.active {
                    g.problems.push(why);
                }
            } else if let Some(p) = &self.kernel.profiles {
                let mode = p.mode(None, &profile);
                g.loaded = Some(mode.is_some());
                g.mode = mode_str(mode);
                if g.active {
                    g.pid = self.qemu_pid(uri, &d.name);
                    match g.pid.map(|pid| process_label(&self.opts.root, pid)) {
                        Some(Ok(l)) => {
                            g.label_source = Some("procfs");
                            g.label = Some(l.to_string());
                            g.label_mode = mode_str(l.mode.as_ref());
                            g.label_ok =
                                Some(l.same_profiles(&expected) && l.mode == Some(Mode::Enforce));
                        }
                        Some(Err(e)) => g.problems.push(e.to_string()),
                        None => self.libvirt_label(&mut g, model, libvirt_label, &profile),
                    }
                }
            }
        } else if g.active {
            // Remote: only libvirt can tell. Its label is the profile name
            // when that profile is loaded, empty otherwise.
            self.libvirt_label(&mut g, model, libvirt_label, &profile);
            if g.label_source.is_some() {
                g.loaded = Some(g.label.as_deref().is_some_and(|l| !l.is_empty()));
            }
        }
        if g.active {
            if g.loaded == Some(false) {
                g.problems.push(format!("profile {profile} is not loaded"));
            } else if g.mode.as_deref().is_some_and(|m| m != "enforce") {
                g.problems.push(format!(
                    "profile {profile} is in {} mode",
                    g.mode.as_deref().unwrap_or("?")
                ));
            }
            if g.label_ok == Some(false) {
                g.problems.push(format!(
                    "runs as {}{}, expected {profile} (enforce)",
                    g.label
                        .as_deref()
                        .filter(|l| !l.is_empty())
                        .unwrap_or("no label"),
                    g.label_mode
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ));
            }
            if g.label_ok.is_none() && g.problems.is_empty() {
                g.problems
                    .push("its process label could not be read".to_string());
            }
            g.confined = Some(g.problems.is_empty() && g.label_ok == Some(true));
        }
        g
    }

    fn libvirt_label(
        &self,
        g: &mut GuestRow,
        model: Option<&str>,
        label: Option<&Result<conn::SecurityLabel, String>>,
        profile: &str,
    ) {
        match label {
            Some(Ok(l)) => {
                g.label_source = Some("libvirt");
                g.label = Some(l.label.clone());
                g.label_mode = Some(if l.enforcing { "enforce" } else { "complain" }.into());
                if model.is_some_and(|m| m != "apparmor") {
                    g.problems.push(format!(
                        "libvirt's security driver is {:?}, not apparmor",
                        model.unwrap_or_default()
                    ));
                }
                g.label_ok = Some(l.label == profile && l.enforcing);
            }
            Some(Err(e)) => g.problems.push(e.clone()),
            None => {}
        }
    }

    fn lxc(&self, c: &Container) -> GuestRow {
        let active = c.init_pid.is_some();
        let mut g = GuestRow {
            name: c.name.clone(),
            kind: GuestKind::Lxc,
            source: c.lxcpath.display().to_string(),
            uuid: None,
            state: c.state.as_str().to_string(),
            active,
            pid: c.init_pid,
            profile: None,
            expected_label: None,
            loaded: None,
            mode: None,
            label: None,
            label_mode: None,
            label_source: None,
            label_ok: None,
            namespace: None,
            namespace_exists: None,
            namespace_profiles: None,
            rules: None,
            rules_file: None,
            denials: None,
            confined: None,
            problems: Vec::new(),
        };
        let configured = c.apparmor_profile.as_deref().map(str::trim);
        let expected = match configured {
            Some("unconfined") => {
                g.problems
                    .push("configured unconfined (lxc.apparmor.profile = unconfined)".into());
                None
            }
            Some("unchanged") | Some("generated") | None => {
                g.problems.push(format!(
                    "not managed by aa-virt (lxc.apparmor.profile is {}); run: aa-virt lxc enable {}",
                    configured.map(|s| format!("{s:?}")).unwrap_or("unset".into()),
                    c.name
                ));
                None
            }
            Some(s) => match Label::parse(s) {
                Ok(l) => Some(l),
                Err(e) => {
                    g.problems.push(format!("lxc.apparmor.profile: {e}"));
                    None
                }
            },
        };
        if let Some(exp) = &expected {
            g.expected_label = Some(exp.to_string());
            g.profile = exp.own_profiles().next().map(str::to_string);
            g.namespace = exp.namespaces().next().map(str::to_string);
        }
        if g.profile.is_some() {
            let file = lxc_profile_file(&self.opts.lxc_layout, c, g.namespace.as_deref());
            g.rules = file.as_deref().and_then(|f| self.rules_of(f));
            g.rules_file = file
                .filter(|_| g.rules.is_some())
                .map(|f| f.display().to_string());
        }
        if let Some(_src) = &self.summary.source {
            let own = g
                .profile
                .as_deref()
                .map(|p| self.summary.denials_of(None, p))
                .unwrap_or(0);
            let inner = g
                .namespace
                .as_deref()
                .map(|n| self.summary.denials_in(n))
                .unwrap_or(0);
            g.denials = Some(own + inner);
        }
        if let Some(why) = self.kernel.unavailable() {
            if active {
                g.problems.push(why);
            }
        } else if let Some(p) = &self.kernel.profiles {
            if let Some(prof) = &g.profile {
                let m = p.mode(None, prof);
                g.loaded = Some(m.is_some());
                g.mode = mode_str(m);
            }
            if let Some(ns) = &g.namespace {
                let exists = self.opts.root.namespace_exists(ns);
                g.namespace_exists = Some(exists);
                g.namespace_profiles = exists.then(|| p.count_in(ns));
            }
            if let (true, Some(pid)) = (active, c.init_pid) {
                match process_label(&self.opts.root, pid) {
                    Ok(l) => {
                        g.label_source = Some("procfs");
                        g.label = Some(l.to_string());
                        g.label_mode = mode_str(l.mode.as_ref());
                        let ok_mode = l.mode == Some(Mode::Enforce);
                        g.label_ok = Some(match &expected {
                            Some(e) => l.same_profiles(e) && ok_mode,
                            None => false,
                        });
                    }
                    Err(e) => g.problems.push(e.to_string()),
                }
            }
        }
        if active {
            if let Some(prof) = &g.profile {
                if g.loaded == Some(false) {
                    g.problems.push(format!("profile {prof} is not loaded"));
                } else if g.mode.as_deref().is_some_and(|m| m != "enforce") {
                    g.problems.push(format!(
                        "profile {prof} is in {} mode",
                        g.mode.as_deref().unwrap_or("?")
                    ));
                }
            }
            if let (Some(ns), Some(false)) = (&g.namespace, g.namespace_exists) {
                g.problems
                    .push(format!("policy namespace {ns} does not exist"));
            }
            if g.label_ok == Some(false) && expected.is_some() {
                g.problems.push(format!(
                    "init (pid {}) runs as {}{}, expected {} (enforce)",
                    g.pid.unwrap_or(0),
                    g.label.as_deref().unwrap_or("?"),
                    g.label_mode
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default(),
                    g.expected_label.as_deref().unwrap_or("?")
                ));
            }
            g.confined = Some(g.problems.is_empty() && g.label_ok == Some(true));
        }
        g
    }
}

/// The profile source of an LXC container, if present: the one aa-virt
/// writes (`/var/lib/aa-virt/lxc/<namespace>`), else the one LXC's own
/// `generated` mode writes (`<lxcpath>/<name>/apparmor/<namespace>`).
pub fn lxc_profile_file(
    layout: &crate::lxc::Layout,
    c: &Container,
    ns: Option<&str>,
) -> Option<PathBuf> {
    let canon = std::fs::canonicalize(&c.lxcpath).unwrap_or_else(|_| c.lxcpath.clone());
    let names = crate::lxc::naming::Names::derive(&c.name, &canon);
    let mut cands = vec![layout.profile_path(&names)];
    if let Some(n) = ns.filter(|n| !n.contains('/')) {
        cands.push(c.lxcpath.join(&c.name).join("apparmor").join(n));
    }
    cands.into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::fake::FakeTree;
    use crate::libvirt::conn::{DomainState, SecurityLabel};

    const UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

    fn dom(label: Option<SecurityLabel>) -> DomainInfo {
        DomainInfo {
            name: "vm1".into(),
            uuid: UUID.parse().unwrap(),
            id: Some(3),
            state: DomainState::Running,
            label: label.map(Ok),
        }
    }

    fn assess(root: &Path, uri: &str, d: &DomainInfo, model: &str) -> GuestRow {
        let opts = Options {
            uris: vec![uri.into()],
            default_uris: false,
            lxcpaths: vec![],
            root: Root::new(root),
            layout: Layout::under(root),
            lxc_layout: crate::lxc::Layout::under(root),
            log: LogChoice::Off,
        };
        let kernel = Kernel::read(&opts.root);
        let summary = denials::Summary::default();
        let present = HashSet::new();
        let ctx = Ctx {
            opts: &opts,
            kernel: &kernel,
            summary: &summary,
            present: &present,
        };
        ctx.qemu(uri, conn::is_local_uri(uri), Some(model), d)
    }

    #[test]
    fn qemu_label_from_procfs_via_the_pid_file() {
        let d = tempfile::tempdir().unwrap();
        let prof = format!("libvirt-{UUID}");
        let mut t = FakeTree::new(d.path()).unwrap();
        t.load(&prof, "enforce").unwrap();
        let run = d.path().join("run/libvirt/qemu");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("vm1.pid"), "4242\n").unwrap();
        // libvirt would say "fine" (it only checks the profile is loaded):
        // the process is what counts.
        let said = Some(SecurityLabel {
            label: prof.clone(),
            enforcing: true,
        });
        t.process(4242, &format!("{prof} (enforce)")).unwrap();
        let g = assess(d.path(), "qemu:///system", &dom(said.clone()), "apparmor");
        assert_eq!(g.pid, Some(4242));
        assert_eq!(g.label_source, Some("procfs"));
        assert_eq!((g.label_ok, g.confined), (Some(true), Some(true)), "{g:?}");

        t.process(4242, "unconfined").unwrap();
        let g = assess(d.path(), "qemu:///system", &dom(said.clone()), "apparmor");
        assert_eq!((g.label_ok, g.confined), (Some(false), Some(false)));
        assert!(
            g.problems[0].contains("runs as unconfined"),
            "{:?}",
            g.problems
        );

        t.process(4242, &format!("{prof} (complain)")).unwrap();
        let g = assess(d.path(), "qemu:///system", &dom(said.clone()), "apparmor");
        assert_eq!(g.label_ok, Some(false));

        // The pid file gone (the process exited): libvirt's word is used.
        std::fs::remove_file(run.join("vm1.pid")).unwrap();
        let g = assess(d.path(), "qemu:///system", &dom(said.clone()), "apparmor");
        assert_eq!(g.label_source, Some("libvirt"));
        assert_eq!(g.confined, Some(true));

        // A remote host: libvirt's label decides, the local kernel does not.
        let g = assess(d.path(), "qemu+ssh://far/system", &dom(said), "apparmor");
        assert_eq!(
            (g.label_source, g.loaded, g.mode.clone()),
            (Some("libvirt"), Some(true), None)
        );
        assert_eq!(g.confined, Some(true));
        let g = assess(
            d.path(),
            "qemu+ssh://far/system",
            &dom(Some(SecurityLabel {
                label: String::new(),
                enforcing: false,
            })),
            "apparmor",
        );
        assert_eq!((g.loaded, g.confined), (Some(false), Some(false)));
        assert!(g.problems.iter().any(|p| p.contains("is not loaded")));
    }
}
