//! `aa-virt hook lxc`: the pre-start, start-host and post-stop hooks.
//!
//! LXC runs a hook as `sh -c "exec <hook>"`. With `lxc.hook.version = 1`
//! the hook type is in `LXC_HOOK_TYPE`; with version 0 it is the third
//! argument (`NAME lxc HOOKTYPE`). `LXC_NAME` and `LXC_CONFIG_FILE` are
//! always set, `LXC_PID` from start-host on. A non-zero exit aborts the
//! start. LXC logs a hook's standard output (at DEBUG) but not its standard
//! error, so the CLI prints failures on both.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::apparmor::label::processes_where;
use crate::apparmor::{
    install_profile, select, ContainerMode, Features, Kernel, LoadError, LoadWhen, Parser,
    ProfileFile, Root, SystemKernel,
};
use crate::policy::Templates;
use crate::store::{self, Txn};

use super::profile::{self, Container};
use super::{probe_options, Layout, LxcError};

/// Which hook LXC runs (`LXC_HOOK_TYPE`), as `libvirt::hook::Op`
/// names the libvirt hook's operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookType {
    /// `pre-start`: before the container's namespaces exist; loads the
    /// profile (and makes the policy namespace).
    PreStart,
    /// `start-host`: init runs; checks its label.
    StartHost,
    /// `post-stop`: the container stopped; cleans up.
    PostStop,
    /// Any other hook (`pre-mount`, `mount`, `stop`, ...): nothing to do.
    Other(String),
}

impl HookType {
    /// LXC's name for a hook.
    pub fn parse(s: &str) -> HookType {
        match s {
            "pre-start" => HookType::PreStart,
            "start-host" => HookType::StartHost,
            "post-stop" => HookType::PostStop,
            other => HookType::Other(other.to_string()),
        }
    }

    /// The name LXC uses.
    pub fn as_str(&self) -> &str {
        match self {
            HookType::PreStart => "pre-start",
            HookType::StartHost => "start-host",
            HookType::PostStop => "post-stop",
            HookType::Other(s) => s,
        }
    }
}

impl From<&str> for HookType {
    fn from(s: &str) -> HookType {
        HookType::parse(s)
    }
}

impl std::fmt::Display for HookType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What LXC told the hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEnv {
    /// Which hook.
    pub hook_type: HookType,
    /// The container.
    pub name: String,
    /// Its config file.
    pub config: PathBuf,
    /// init's pid (start-host and later).
    pub pid: Option<u32>,
}

impl HookEnv {
    /// From the environment `get` (LXC's variables) and the arguments after
    /// `hook lxc` (the version-0 form `NAME lxc HOOKTYPE [...]`).
    pub fn new(get: impl Fn(&str) -> Option<String>, args: &[String]) -> Result<HookEnv, LxcError> {
        let hook_type = get("LXC_HOOK_TYPE")
            .filter(|s| !s.is_empty())
            .or_else(|| args.get(2).cloned())
            .map(|t| HookType::parse(&t))
            .ok_or_else(|| {
                LxcError::Hook("no hook type: LXC_HOOK_TYPE is not set and there are no `NAME lxc HOOKTYPE` arguments (is this run by LXC?)".into())
            })?;
        let name = get("LXC_NAME")
            .filter(|s| !s.is_empty())
            .or_else(|| args.first().cloned())
            .ok_or_else(|| LxcError::Hook("LXC_NAME is not set".into()))?;
        let config = get("LXC_CONFIG_FILE")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                LxcError::Hook(format!("container {name}: LXC_CONFIG_FILE is not set"))
            })?;
        let pid = match get("LXC_PID").filter(|s| !s.is_empty()) {
            Some(p) => Some(p.parse().map_err(|_| {
                LxcError::Hook(format!("container {name}: LXC_PID {p:?} is not a pid"))
            })?),
            None => None,
        };
        Ok(HookEnv {
            hook_type,
            name,
            config,
            pid,
        })
    }

    /// From the process environment.
    pub fn from_process(args: &[String]) -> Result<HookEnv, LxcError> {
        HookEnv::new(|k| std::env::var(k).ok(), args)
    }
}

/// How the hooks behave.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the kernel interfaces are.
    pub root: Root,
    /// Where aa-virt's files are.
    pub layout: Layout,
    /// The parser.
    pub parser: Parser,
    /// Start the container unconfined when the kernel has no AppArmor.
    pub allow_unconfined: bool,
    /// Start without mount mediation.
    pub allow_incomplete: bool,
    /// How long post-stop waits for the container's tasks to go.
    pub settle: Duration,
    /// The hook's effective uid: root loads and unloads policy; any other
    /// uid runs a user container, whose policy root registered and loaded
    /// ([`super::user`]), so its hooks only check.
    pub euid: u32,
    /// What to do with `kernel.unprivileged_userns_apparmor_policy` before
    /// a stacked namespace is loaded (the config's `lxc_userns_policy`).
    pub userns_policy: crate::config::UsernsPolicySwitch,
}

/// What a hook run did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LxcHookOutcome {
    /// pre-start loaded the profile (and made the namespace).
    Loaded {
        /// The label init will get.
        label: String,
        /// The profile file changed.
        changed: bool,
        /// The namespace was made by this run.
        namespace_created: bool,
    },
    /// start-host found init under the expected label.
    Verified(String),
    /// post-stop cleaned up.
    Cleaned {
        /// The namespace was removed by this run.
        namespace_removed: bool,
        /// The profile was unloaded by this run.
        unloaded: bool,
    },
    /// pre-start of a user's container: root registered and loaded its
    /// policy; the label is the registered one.
    Registered {
        /// The label init will get.
        label: String,
        /// The owner's login name.
        user: String,
    },
    /// post-stop of a user's container: its policy stays loaded (root's).
    Kept(String),
    /// The kernel has no AppArmor and unconfined is allowed.
    Unconfined(String),
    /// A hook type aa-virt has nothing to do for.
    Ignored,
}

impl std::fmt::Display for LxcHookOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LxcHookOutcome::Loaded {
                label,
                changed,
                namespace_created,
            } => write!(
                f,
                "loaded {label} (profile {}, namespace {})",
                if *changed { "written" } else { "unchanged" },
                if *namespace_created {
                    "created"
                } else {
                    "existed"
                }
            ),
            LxcHookOutcome::Verified(l) => write!(f, "init runs as {l}"),
            LxcHookOutcome::Cleaned {
                namespace_removed,
                unloaded,
            } => write!(
                f,
                "cleaned up (namespace {}, profile {})",
                if *namespace_removed {
                    "removed"
                } else {
                    "already gone"
                },
                if *unloaded { "unloaded" } else { "not loaded" }
            ),
            LxcHookOutcome::Registered { label, user } => {
                write!(f, "{label} is registered to user {user} and loaded by root")
            }
            LxcHookOutcome::Kept(p) => write!(
                f,
                "profile {p} stays loaded (a user container's policy is root's; `aa-virt lxc disable` unloads it)"
            ),
            LxcHookOutcome::Unconfined(why) => write!(f, "running unconfined as allowed: {why}"),
            LxcHookOutcome::Ignored => f.write_str("nothing to do"),
        }
    }
}

/// The container's configured label, checked to be aa-virt's; gives the mode.
fn configured(ct: &Container) -> Result<ContainerMode, LxcError> {
    let names = ct.names();
    let got = ct
        .label()
        .map(|e| e.value.clone())
        .unwrap_or_else(|| "(not set)".into());
    names.mode_of(&got).ok_or_else(|| LxcError::NotEnabled {
        container: ct.name.clone(),
        got,
        want: names.label(ContainerMode::Stacked),
        config: ct.config.display().to_string(),
    })
}

/// Decide whether the host can confine the container in `mode`; `Ok(None)`
/// means: no AppArmor, and running unconfined is allowed.
fn host_check(
    ct: &Container,
    mode: ContainerMode,
    s: &Settings,
) -> Result<Option<String>, LxcError> {
    let f = Features::kernel(&s.root);
    match f.container_mode(s.allow_incomplete) {
        Err(msg) if !f.available && s.allow_unconfined => Ok(Some(msg)),
        Err(msg) => Err(LxcError::Kernel {
            container: ct.name.clone(),
            message: if f.available {
                msg
            } else {
                format!("{msg}; container would run unconfined, so aa-virt fails its start (set fail = \"open\" in /etc/aa-virt/aa-virt.toml, or AA_VIRT_ALLOW_UNCONFINED=1 for lxc-start, to allow unconfined containers)")
            },
        }),
        Ok(m) if m != mode => Err(LxcError::Kernel {
            container: ct.name.clone(),
            message: format!(
                "the config asks for a {} label but this host needs a {} one ({}); run `aa-virt lxc enable {}` again",
                if mode == ContainerMode::Stacked { "stacked" } else { "plain" },
                if m == ContainerMode::Stacked { "stacked" } else { "plain" },
                if m == ContainerMode::Plain { "it is itself a stacked container" } else { "it can stack" },
                ct.name
            ),
        }),
        Ok(_) => Ok(None),
    }
}

/// Run one hook.
pub fn run(env: &HookEnv, s: &Settings, templates: &Templates) -> Result<LxcHookOutcome, LxcError> {
    match &env.hook_type {
        HookType::PreStart => pre_start(env, s, templates),
        HookType::StartHost => start_host(env, s),
        HookType::PostStop => post_stop(env, s),
        HookType::Other(other) => {
            tracing::debug!("container {}: hook {other}: nothing to do", env.name);
            Ok(LxcHookOutcome::Ignored)
        }
    }
}

/// The kernel below the settings' root.
pub(crate) fn kernel(s: &Settings) -> Box<dyn Kernel + Send + Sync> {
    select(SystemKernel::at(s.root.clone()))
}

fn pre_start(
    env: &HookEnv,
    s: &Settings,
    templates: &Templates,
) -> Result<LxcHookOutcome, LxcError> {
    let ct = Container::from_config_file(&env.name, &env.config)?;
    let mode = configured(&ct)?;
    if let Some(why) = host_check(&ct, mode, s)? {
        return Ok(LxcHookOutcome::Unconfined(why));
    }
    let names = ct.names();
    if s.euid != 0 {
        let r = super::user::check_registered(&s.layout, &names, &ct.name, &ct.lxcpath, s.euid)?;
        // The profile list is root's to read; where it is readable, a
        // profile that is not loaded is named here. Where it is not, LXC's
        // own switch to the label fails the start.
        if let Ok(None) = kernel(s).profile_mode(&names.profile) {
            return Err(LxcError::Kernel {
                container: ct.name.clone(),
                message: format!(
                    "profile {} is not loaded; root must run `aa-virt lxc load-users` (or enable the container again)",
                    names.profile
                ),
            });
        }
        return Ok(LxcHookOutcome::Registered {
            label: names.label(mode),
            user: r.user,
        });
    }
    let (changed, namespace_created) = load_policy(&ct, mode, s, templates)?;
    Ok(LxcHookOutcome::Loaded {
        label: names.label(mode),
        changed,
        namespace_created,
    })
}

/// Render and load a container's profile again when the kernel has it
/// loaded (the container runs), as after a change to its allowances; the
/// running tasks get the new policy at once. `Ok(false)`: not loaded, its
/// next start renders the change.
pub fn reload_if_loaded(
    ct: &Container,
    s: &Settings,
    templates: &Templates,
) -> Result<bool, LxcError> {
    let mode = configured(ct)?;
    if !matches!(kernel(s).profile_mode(&ct.names().profile), Ok(Some(_))) {
        return Ok(false);
    }
    load_policy(ct, mode, s, templates)?;
    Ok(true)
}

/// Render, store and load a container's profile and make its namespace
/// (root only), under the container's lock. A failed load restores the
/// previous file and removes a namespace this run made; the kernel keeps
/// the previous policy. Gives (profile file changed, namespace created).
pub fn load_policy(
    ct: &Container,
    mode: ContainerMode,
    s: &Settings,
    templates: &Templates,
) -> Result<(bool, bool), LxcError> {
    let names = ct.names();
    let rendered = profile::render_stored(
        ct,
        mode,
        templates,
        probe_options(&s.parser),
        &s.layout.allow_dir,
    )?;
    let _lock = store::lock(&s.layout.lock_dir, &names.profile)?;
    store::sweep_temp(&s.layout.profile_dir);
    std::fs::create_dir_all(&s.layout.cache_dir).map_err(|source| LxcError::Io {
        op: "create cache directory",
        path: s.layout.cache_dir.clone(),
        source,
    })?;
    let path = s.layout.profile_path(&names);
    let kernel = kernel(s);
    let namespace_created = match mode {
        ContainerMode::Stacked => {
            super::user::close_userns_policy(&ct.name, s, &*kernel)?;
            kernel.create_namespace(&names.namespace)?
        }
        ContainerMode::Plain => false,
    };
    let mut txn = Txn::new();
    let file = ProfileFile {
        path: &path,
        content: rendered.text.as_bytes(),
        mode: 0o644,
        create_only: false,
    };
    let done = install_profile(
        kernel.as_ref(),
        &s.layout.parser(&s.parser),
        &mut txn,
        &names.profile,
        &path,
        &[file],
        LoadWhen::ChangedOrNotLoaded,
    );
    match done {
        Ok(done) => {
            txn.commit();
            Ok((done.written[0], namespace_created))
        }
        Err(e) => {
            if namespace_created {
                if let Err(e) = kernel.remove_namespace(&names.namespace) {
                    tracing::error!(
                        "container {}: removing namespace after a failed load: {e}",
                        ct.name
                    );
                }
            }
            // Dropping the transaction restores the previous file (or
            // removes the new one); the kernel keeps the previous policy.
            drop(txn);
            Err(match e {
                LoadError::Store(e) => e.into(),
                LoadError::Parser(source) => LxcError::Parser {
                    container: ct.name.clone(),
                    source,
                },
            })
        }
    }
}

fn start_host(env: &HookEnv, s: &Settings) -> Result<LxcHookOutcome, LxcError> {
    let ct = Container::from_config_file(&env.name, &env.config)?;
    let mode = configured(&ct)?;
    if let Some(why) = host_check(&ct, mode, s)? {
        return Ok(LxcHookOutcome::Unconfined(why));
    }
    let pid = env.pid.ok_or_else(|| {
        LxcError::Hook(format!("container {}: start-host without LXC_PID", ct.name))
    })?;
    let names = ct.names();
    let want = names.expected_current(mode);
    let label = kernel(s).task_label(pid)?;
    let got = match &label.mode {
        Some(m) => format!("{label} ({m})"),
        None => label.to_string(),
    };
    if want.contains(&got) {
        Ok(LxcHookOutcome::Verified(got))
    } else {
        Err(LxcError::LabelMismatch {
            container: ct.name.clone(),
            pid,
            got,
            want: want[0].clone(),
        })
    }
}

fn post_stop(env: &HookEnv, s: &Settings) -> Result<LxcHookOutcome, LxcError> {
    let ct = Container::from_config_file(&env.name, &env.config)?;
    let names = ct.names();
    if s.euid != 0 {
        return Ok(LxcHookOutcome::Kept(names.profile));
    }
    let kernel = kernel(s);
    if !kernel.status().is_available() {
        tracing::debug!(
            "container {}: AppArmor not available, nothing to clean",
            ct.name
        );
        return Ok(LxcHookOutcome::Cleaned {
            namespace_removed: false,
            unloaded: false,
        });
    }
    // Unloading a profile that tasks still use would move them to the
    // namespace's unconfined: wait until the container's tasks are gone.
    let users = || {
        processes_where(&s.root, |l| {
            l.own_profiles().any(|p| p == names.profile)
                || l.namespaces().any(|n| n == names.namespace)
        })
    };
    let start = Instant::now();
    let mut left = users();
    while !left.is_empty() && start.elapsed() < s.settle {
        std::thread::sleep(Duration::from_millis(100));
        left = users();
    }
    if !left.is_empty() {
        return Err(LxcError::StillRunning {
            container: ct.name.clone(),
            profile: names.profile.clone(),
            pids: left.into_iter().map(|(p, _)| p).collect(),
        });
    }
    let _lock = store::lock(&s.layout.lock_dir, &names.profile)?;
    let namespace_removed = kernel.remove_namespace(&names.namespace)?;
    let unloaded = kernel
        .remove_profile(&names.profile)
        .map_err(|source| LxcError::Io {
            op: "unload profile through",
            path: s.root.apparmor_dir().join(".remove"),
            source,
        })?;
    Ok(LxcHookOutcome::Cleaned {
        namespace_removed,
        unloaded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(a, _)| *a == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn version_1_environment() {
        let e = HookEnv::new(
            env(&[
                ("LXC_HOOK_TYPE", "start-host"),
                ("LXC_NAME", "c1"),
                ("LXC_CONFIG_FILE", "/var/lib/lxc/c1/config"),
                ("LXC_PID", "42"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(e.hook_type, HookType::StartHost);
        assert_eq!(e.pid, Some(42));
    }

    #[test]
    fn version_0_arguments() {
        let args: Vec<String> = ["c1", "lxc", "post-stop"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = HookEnv::new(env(&[("LXC_CONFIG_FILE", "/x/c1/config")]), &args).unwrap();
        assert_eq!((&e.hook_type, e.name.as_str()), (&HookType::PostStop, "c1"));
        assert_eq!(e.pid, None);
    }

    #[test]
    fn missing_variables_are_clear() {
        let e = HookEnv::new(env(&[]), &[]).unwrap_err().to_string();
        assert!(e.contains("LXC_HOOK_TYPE"), "{e}");
        let e = HookEnv::new(
            env(&[("LXC_HOOK_TYPE", "pre-start"), ("LXC_NAME", "c1")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("LXC_CONFIG_FILE"), "{e}");
        let e = HookEnv::new(
            env(&[
                ("LXC_HOOK_TYPE", "start-host"),
                ("LXC_NAME", "c1"),
                ("LXC_CONFIG_FILE", "/c"),
                ("LXC_PID", "x"),
            ]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a pid"), "{e}");
    }
}
