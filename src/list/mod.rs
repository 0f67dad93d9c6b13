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

mod assess;
pub mod denials;
mod gather;
pub mod report;
pub mod stale;
pub mod status;

use std::path::PathBuf;

use serde::Serialize;

use crate::apparmor::Root;
use crate::guest::GuestKind;
use crate::libvirt::profile::Layout;
use crate::lxc::sys as lxc;

pub use assess::lxc_profile_file;
pub use denials::LogChoice;
pub use gather::gather;

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
pub struct ListOptions {
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
    /// The parser loads use (its cache is set per layout): how the policy
    /// on disk compiles, to tell a stale loaded profile.
    pub parser: crate::apparmor::Parser,
    /// Tell whether each loaded profile is stale ([`GuestRow::stale`]):
    /// one walk of its includes per running guest. Callers that only need
    /// the guests (`reload`, `check`) turn it off.
    pub staleness: bool,
    /// The templates directory the hooks render with (`--templates`;
    /// `None`: the built-in ones), to tell a container whose profile
    /// renders differently now.
    pub templates: Option<PathBuf>,
}

impl ListOptions {
    /// Add the lxcpaths of the containers registered with `aa-virt lxc
    /// enable --user` (users' `~/.local/share/lxc`), once each.
    pub fn add_user_lxcpaths(&mut self) {
        for (_, r) in crate::lxc::user::registrations(&self.lxc_layout) {
            if let Ok(r) = r {
                if !self.lxcpaths.contains(&r.lxcpath) {
                    self.lxcpaths.push(r.lxcpath);
                }
            }
        }
    }

    /// The defaults: the local system's libvirt and LXC's configured
    /// lxcpath, the real root, the standard layout and the auto-chosen log.
    pub fn system() -> ListOptions {
        ListOptions {
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
            parser: crate::apparmor::Parser::new(),
            staleness: true,
            templates: None,
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
    /// The log read (`/var/log/audit/audit.log`, the journal, ...).
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
#[derive(Debug, Clone)]
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
    /// Allowances made with `aa-virt allow` (counted in `rules` once rendered).
    pub allowances: Option<usize>,
    /// The mode set with `aa-virt mode` (`complain`, `enforce`), kept
    /// across restarts; `None` when the configuration decides.
    pub stored_mode: Option<String>,
    /// Denials attributed to it in the log.
    pub denials: Option<usize>,
    /// Verdict for an active guest: confined exactly as expected.
    pub confined: Option<bool>,
    /// The loaded policy against the policy on disk: `current`, or
    /// `stale: <why>` (`None`: not loaded here, or cannot be known).
    pub policy: Option<String>,
    /// The loaded policy is not the policy on disk (`aa-virt reload`
    /// applies it).
    pub stale: Option<bool>,
    /// What is wrong, one sentence each.
    pub problems: Vec<String>,
    /// LXC: `privileged` (no id map), `unprivileged` (id-mapped, started by
    /// root) or `user` (registered with `aa-virt lxc enable --user`, started
    /// by its owner); `None` for libvirt guests or an unreadable config.
    pub privilege: Option<&'static str>,
    /// The owner of a `user` container (login name).
    pub owner: Option<String>,
}

impl GuestRow {
    /// A container whose profile root renders at each start (privileged or
    /// id-mapped): not a user container, whose policy is what root enabled.
    pub fn rendered_by_root(&self) -> bool {
        self.kind == GuestKind::Lxc && self.privilege != Some("user")
    }

    /// A guest not assessed yet: what it is and its state, nothing known
    /// about its confinement.
    pub fn new(name: &str, kind: GuestKind, source: String, state: &str, active: bool) -> GuestRow {
        GuestRow {
            name: name.to_string(),
            kind,
            source,
            uuid: None,
            state: state.to_string(),
            active,
            pid: None,
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
            allowances: None,
            stored_mode: None,
            denials: None,
            confined: None,
            policy: None,
            stale: None,
            problems: Vec::new(),
            privilege: None,
            owner: None,
        }
    }
}

/// The whole listing.
#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
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

impl ListReport {
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

    /// One line per failed source: `<kind> <location>: <error>`.
    pub fn error_lines(&self) -> Vec<String> {
        self.errors()
            .map(|s| {
                format!(
                    "{} {}: {}",
                    s.kind,
                    s.location,
                    s.error.as_deref().unwrap_or("?")
                )
            })
            .collect()
    }
}

/// Gather and assess every guest (see [`gather`]).
pub fn list(opts: &ListOptions) -> Result<ListReport, ListError> {
    gather(opts, |_| false).map(|(r, _)| r)
}
