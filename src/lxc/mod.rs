//! LXC containers: a per-container profile stacked with a per-container
//! AppArmor policy namespace, set up by LXC hooks.
//!
//! LXC has no pre-exec hook and a task can only write its own label, so the
//! label is fixed in the container's config (`lxc.apparmor.profile =
//! PROFILE//&:NAMESPACE:`, written by [`enable`]); the pre-start hook makes
//! sure the profile and namespace it names exist before LXC switches init
//! into it, start-host verifies init's label, and post-stop removes both
//! once the container's tasks are gone ([`hook`]).

pub mod config;
pub mod hook;
pub mod naming;
pub mod profile;
pub mod sys;
pub mod user;

use std::path::{Path, PathBuf};

use crate::apparmor::{
    ContainerMode, Features, LabelError, Parser, ParserError, Root, SecurityfsError,
};
use crate::policy::{RuleError, TemplateError, Templates};
use crate::store::{self, StoreError};

pub use config::ConfigError;
pub use naming::Names;
pub use profile::{Container, Rendered};

/// Where the snippet is installed.
pub const SNIPPET: &str = "/usr/share/aa-virt/lxc-hooks/aa-virt.conf";
/// LXC's default lxcpath.
pub const DEFAULT_LXCPATH: &str = "/var/lib/lxc";
/// Environment: a directory standing in for `/` for aa-virt's own files
/// (profiles, locks, cache); tests only.
pub const ROOT_ENV: &str = "AA_VIRT_ROOT";

/// LXC errors; each names the container and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LxcError {
    /// The container name cannot be one.
    #[error("{0:?} is not a container name: {1}")]
    BadName(String, &'static str),
    /// The lxcpath does not exist.
    #[error("lxcpath {path}: {source} (give the right --lxcpath)")]
    NoLxcpath {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No config for the container.
    #[error("container {name}: no config at {} (is the name right, and the --lxcpath?)", config.display())]
    NoContainer {
        /// Container.
        name: String,
        /// Where the config should be.
        config: PathBuf,
    },
    /// The config could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The container already uses another label.
    #[error("container {container}: it already runs under lxc.apparmor.profile = {value} ({at}); `aa-virt lxc enable --force` replaces that label with aa-virt's")]
    OtherProfile {
        /// Container.
        container: String,
        /// The label it has.
        value: String,
        /// Where it is set.
        at: String,
    },
    /// A hook ran for a container whose config does not carry our label.
    #[error("container {container}: lxc.apparmor.profile is {got} in {config}, not aa-virt's label {want}; run `aa-virt lxc enable {container}` (again, if the container was copied or moved)")]
    NotEnabled {
        /// Container.
        container: String,
        /// What the config says.
        got: String,
        /// What it should say.
        want: String,
        /// The config file.
        config: String,
    },
    /// The host cannot confine the container as configured.
    #[error("container {container}: {message}")]
    Kernel {
        /// Container.
        container: String,
        /// What is missing and what to do.
        message: String,
    },
    /// A bind source cannot be granted.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The container's allowances (`aa-virt allow`) cannot be used.
    #[error(transparent)]
    Allow(#[from] crate::policy::allow::AllowError),
    /// A template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A file could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// securityfs refused.
    #[error(transparent)]
    Securityfs(#[from] SecurityfsError),
    /// A label could not be read.
    #[error(transparent)]
    Label(#[from] LabelError),
    /// The parser failed.
    #[error("container {container}: {source}")]
    Parser {
        /// Container.
        container: String,
        /// Why.
        source: ParserError,
    },
    /// A raw rule is unusable.
    #[error("container {container}: raw rule at {at} {why}")]
    BadRaw {
        /// Container.
        container: String,
        /// Where it is.
        at: String,
        /// What is wrong.
        why: String,
    },
    /// init runs under another label than expected.
    #[error("container {container}: init (pid {pid}) runs as {got:?}, expected {want:?}; refusing to start it")]
    LabelMismatch {
        /// Container.
        container: String,
        /// init's pid.
        pid: u32,
        /// The label read.
        got: String,
        /// The label expected.
        want: String,
    },
    /// Tasks still run under the container's profile.
    #[error("container {container}: tasks {pids:?} still run under {profile}; not unloading it (that would leave them unconfined); stop them and run the post-stop hook again")]
    StillRunning {
        /// Container.
        container: String,
        /// The profile.
        profile: String,
        /// The tasks.
        pids: Vec<u32>,
    },
    /// The hook was called without what LXC passes.
    #[error("hook: {0}")]
    Hook(String),
    /// Other I/O.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Check a container name: what LXC itself accepts as a directory name.
pub fn check_container_name(name: &str) -> Result<(), LxcError> {
    match crate::policy::rules::name_problem(name) {
        Some(why) => Err(LxcError::BadName(name.to_string(), why)),
        None => Ok(()),
    }
}

/// Where aa-virt keeps container profiles; every path can be moved under a
/// root for tests.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Rendered profiles (`/var/lib/aa-virt/lxc`), one file per container,
    /// kept across stops so the parser's cache stays valid.
    pub profile_dir: PathBuf,
    /// Per-guest locks (shared with libvirt guests).
    pub lock_dir: PathBuf,
    /// Compiled-policy cache (shared with libvirt guests).
    pub cache_dir: PathBuf,
    /// Per-guest state: allowances (`aa-virt allow`), keyed by the
    /// container's profile name (shared with libvirt guests).
    pub allow_dir: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout::under(Path::new("/"))
    }
}

impl Layout {
    /// The standard layout below `root`.
    pub fn under(root: &Path) -> Layout {
        Layout {
            profile_dir: root.join("var/lib/aa-virt/lxc"),
            lock_dir: crate::store::lock_dir_under(root),
            cache_dir: crate::store::cache_dir_under(root),
            allow_dir: crate::policy::allow::dir_under(root),
        }
    }

    /// Below `$AA_VIRT_ROOT` when set, `/` otherwise.
    pub fn from_env() -> Layout {
        match std::env::var_os(ROOT_ENV) {
            Some(v) if !v.is_empty() => Layout::under(Path::new(&v)),
            _ => Layout::default(),
        }
    }

    /// The profile file of a container.
    pub fn profile_path(&self, names: &Names) -> PathBuf {
        self.profile_dir.join(names.file_name())
    }

    /// A parser that writes its cache here.
    pub fn parser(&self, base: &Parser) -> Parser {
        let mut p = base.clone();
        p.cache = Some(self.cache_dir.clone());
        p
    }
}

/// How the config gets the hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookStyle {
    /// `lxc.include` of the snippet.
    Include(PathBuf),
    /// `lxc.hook.version = 1` and the three hooks, running this command.
    Inline(String),
}

impl HookStyle {
    /// The snippet when it is installed, else the running binary inline.
    pub fn default_for_host() -> HookStyle {
        if Path::new(SNIPPET).is_file() {
            return HookStyle::Include(PathBuf::from(SNIPPET));
        }
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "/usr/bin/aa-virt".into());
        HookStyle::Inline(format!("{} hook lxc", config::shell_quote(&exe)))
    }

    fn lines(&self) -> Vec<String> {
        match self {
            HookStyle::Include(p) => vec![format!("lxc.include = {}", p.display())],
            HookStyle::Inline(cmd) => vec![
                "lxc.hook.version = 1".into(),
                format!("lxc.hook.pre-start = {cmd}"),
                format!("lxc.hook.start-host = {cmd}"),
                format!("lxc.hook.post-stop = {cmd}"),
            ],
        }
    }
}

/// Options of `aa-virt lxc enable`.
#[derive(Debug, Clone)]
pub struct EnableOptions {
    /// Where the container lives.
    pub lxcpath: PathBuf,
    /// Add `lxc.apparmor.allow_nesting = 1`.
    pub nesting: bool,
    /// Raw rules to store as `lxc.apparmor.raw`.
    pub raw: Vec<String>,
    /// Replace another label.
    pub force: bool,
    /// How to add the hooks.
    pub hooks: HookStyle,
}

/// What [`enable`] or [`disable`] did.
#[derive(Debug, Clone)]
pub struct EditReport {
    /// The container's names.
    pub names: Names,
    /// The label now configured (enable) or removed (disable).
    pub label: String,
    /// True when the config file changed.
    pub changed: bool,
    /// Warnings for the user.
    pub warnings: Vec<String>,
}

/// Replace a container's config, keeping its mode and its owner: a user's
/// container config (and one LXC wrote for an id-mapped container, owned by
/// the mapped root) must stay the owner's, or their `lxc-start` can no
/// longer read it.
fn write_config(path: &Path, text: &str) -> Result<(), LxcError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(path).ok();
    let mode = md
        .as_ref()
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o640);
    store::write_atomic(path, text.as_bytes(), mode)?;
    if let Some(m) = md {
        std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid())).map_err(|source| {
            LxcError::Io {
                op: "give back to its owner",
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Enable aa-virt for container `name`: add the hooks and the label to its
/// config (idempotent; comments and order are kept), after checking that
/// the profile it will get compiles.
pub fn enable(
    name: &str,
    opts: &EnableOptions,
    root: &Root,
    templates: &Templates,
    parser: &Parser,
) -> Result<EditReport, LxcError> {
    let ct = Container::open(name, &opts.lxcpath)?;
    let text = config::read_text(&ct.config)?;
    let base = ct.with_text(&config::disable_text(&text))?;
    let names = ct.names();
    if let Some(e) = base.label() {
        if e.value != "generated" && names.mode_of(&e.value).is_none() && !opts.force {
            return Err(LxcError::OtherProfile {
                container: name.to_string(),
                value: e.value.clone(),
                at: e.at(),
            });
        }
    }
    let features = Features::kernel(root);
    let mode = if features.ns_stacked == Some(true) {
        ContainerMode::Plain
    } else {
        ContainerMode::Stacked
    };
    let label = names.label(mode);
    let mut warnings = Vec::new();
    if !features.available {
        warnings.push(format!(
            "AppArmor not available: {}; the container will not start until it is (or fail = \"open\" is set in /etc/aa-virt/aa-virt.toml, or AA_VIRT_ALLOW_UNCONFINED=1 for lxc-start)",
            features.unavailable_reason.as_deref().unwrap_or("unknown reason")
        ));
    }
    let others: Vec<_> = base
        .entries
        .iter()
        .filter(|e| e.key.starts_with("lxc.hook.") && e.key != "lxc.hook.version")
        .collect();
    if !others.is_empty()
        && config::last(&base.entries, "lxc.hook.version").is_none_or(|e| e.value != "1")
    {
        warnings.push(format!(
            "the container has other hooks ({}); lxc.hook.version = 1 passes them LXC_HOOK_TYPE and friends instead of arguments",
            others.iter().map(|e| e.at()).collect::<Vec<_>>().join(", ")
        ));
    }
    let block = config::Block {
        hooks: opts.hooks.lines(),
        label: label.clone(),
        nesting: opts.nesting,
        raw: opts.raw.clone(),
    };
    let new = config::enable_text(&text, &block);
    // The profile this config will get must compile before we commit to it.
    let future = ct.with_text(&new)?;
    let probes = probe_options(parser);
    let allow_dir = Layout::from_env().allow_dir;
    profile::render_stored(&future, mode, templates, probes, &allow_dir)?.check(name, parser)?;
    let changed = new != text;
    if changed {
        write_config(&ct.config, &new)?;
    }
    Ok(EditReport {
        names,
        label,
        changed,
        warnings,
    })
}

/// Disable aa-virt for container `name`: restore its config as it was
/// before `enable`, and remove its stored profile unless it is loaded (a
/// running container keeps it until its post-stop hook).
pub fn disable(
    name: &str,
    lxcpath: &Path,
    root: &Root,
    layout: &Layout,
) -> Result<EditReport, LxcError> {
    let ct = Container::open(name, lxcpath)?;
    let text = config::read_text(&ct.config)?;
    let new = config::disable_text(&text);
    let names = ct.names();
    let changed = new != text;
    if changed {
        write_config(&ct.config, &new)?;
    }
    let mut warnings = Vec::new();
    let kernel = crate::apparmor::select(crate::apparmor::SystemKernel::at(root.clone()));
    let loaded = kernel.status().is_available()
        && kernel.profile_mode(&names.profile).ok().flatten().is_some();
    if loaded {
        warnings.push(format!(
            "profile {} is still loaded (the container runs?); its post-stop hook unloads it",
            names.profile
        ));
    } else {
        let _lock = store::lock(&layout.lock_dir, &names.profile)?;
        store::remove(&layout.profile_path(&names))?;
    }
    Ok(EditReport {
        label: ct.label().map(|e| e.value.clone()).unwrap_or_default(),
        names,
        changed,
        warnings,
    })
}

/// Probe the parser for the rules the template uses when it can.
pub fn probe_options(parser: &Parser) -> profile::RenderOptions {
    use crate::apparmor::features::probe_rule;
    profile::RenderOptions {
        host: crate::policy::abi::HostSupport::probe(parser),
        nosymfollow: probe_rule(
            parser,
            "mount options=(ro, nosymfollow) -> /aa-virt-probe/,",
        )
        .unwrap_or(false),
        complain: false,
    }
}
