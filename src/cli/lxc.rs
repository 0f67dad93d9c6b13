//! The `aa-virt lxc ...` and `aa-virt hook lxc` commands (wired up in
//! [`super`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use aa_virt::apparmor::{Parser, Root, SYSROOT_ENV};
use aa_virt::lxc::hook::{self, HookEnv, Settings};
use aa_virt::lxc::{self as lxc, profile, user, EnableOptions, HookStyle, Layout, DEFAULT_LXCPATH};
use aa_virt::policy::explain::Policy;
use aa_virt::policy::Templates;

use super::{CliError, EXIT_ERROR, EXIT_OK};

/// Environment: allow containers to start unconfined on a kernel without AppArmor.
pub const ALLOW_UNCONFINED_ENV: &str = "AA_VIRT_ALLOW_UNCONFINED";
/// Environment: allow containers to start without mount mediation.
pub const ALLOW_INCOMPLETE_ENV: &str = "AA_VIRT_ALLOW_INCOMPLETE";
/// Environment: a file that gets one line per hook run (tests, debugging).
pub const HOOK_LOG_ENV: &str = "AA_VIRT_HOOK_LOG";

/// `aa-virt lxc`.
#[derive(Debug, Args)]
pub struct LxcArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: LxcCommand,
}

/// `aa-virt lxc` subcommands.
#[derive(Debug, Subcommand)]
pub enum LxcCommand {
    /// Confine a container: add aa-virt's hooks and stacked label to its config.
    Enable(EnableArgs),
    /// Undo `enable`: restore the container's config as it was.
    Disable(DisableArgs),
    /// Print the profile a container gets at its next start (dry run).
    Profile(ProfileArgs),
    /// Load the policy of every container registered with `enable --user`
    /// (root, at boot).
    LoadUsers,
}

/// `aa-virt lxc enable`.
#[derive(Debug, Args)]
pub struct EnableArgs {
    /// The container.
    pub name: String,
    /// The container's lxcpath [default: /var/lib/lxc, or with --user the
    /// user's ~/.local/share/lxc].
    #[arg(long, short = 'P', value_name = "DIR")]
    pub lxcpath: Option<PathBuf>,
    /// The container is USER's, started by USER's own lxc-start: register
    /// it to USER and load its policy now (root only; the user's hooks then
    /// only check it).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Let the container run containers (lxc.apparmor.allow_nesting = 1).
    #[arg(long)]
    pub nesting: bool,
    /// Append the AppArmor rules in FILE (stored as lxc.apparmor.raw lines).
    #[arg(long, value_name = "FILE")]
    pub raw: Option<PathBuf>,
    /// Replace a label the container already has.
    #[arg(long)]
    pub force: bool,
    /// Include this hook snippet (default: the installed one, if any).
    #[arg(long, value_name = "FILE", conflicts_with = "inline")]
    pub snippet: Option<PathBuf>,
    /// Write the hooks into the config, running this aa-virt binary.
    #[arg(long)]
    pub inline: bool,
}

/// `aa-virt lxc disable`.
#[derive(Debug, Args)]
pub struct DisableArgs {
    /// The container.
    pub name: String,
    /// The container's lxcpath.
    #[arg(long, short = 'P', default_value = DEFAULT_LXCPATH, value_name = "DIR")]
    pub lxcpath: PathBuf,
}

/// `aa-virt lxc profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// The container.
    pub name: String,
    /// The container's lxcpath.
    #[arg(long, short = 'P', default_value = DEFAULT_LXCPATH, value_name = "DIR")]
    pub lxcpath: PathBuf,
    /// Compile the result with apparmor_parser (nothing is loaded).
    #[arg(long)]
    pub check: bool,
}

/// The templates containers are rendered with: `--templates`, else the
/// configuration's `templates`, else the built-in ones (the hooks resolve
/// them the same way, so root's commands render what a start renders).
fn templates(dir: Option<&std::path::Path>) -> Result<Templates, CliError> {
    if dir.is_some() {
        return Ok(Templates::load(dir)?);
    }
    Ok(templates_for(None, &root_config()?)?)
}

/// [`templates`] with the configuration already read.
fn templates_for(
    dir: Option<&Path>,
    cfg: &aa_virt::config::Config,
) -> Result<Templates, aa_virt::policy::TemplateError> {
    Templates::load(dir.or(cfg.templates.as_deref()))
}

/// The configuration file (a file that does not parse is an error, as in
/// the hooks).
fn root_config() -> Result<aa_virt::config::Config, CliError> {
    Ok(aa_virt::config::Config::load(
        &aa_virt::config::Config::default_path(),
    )?)
}

/// Run `aa-virt lxc ...`.
pub fn run_lxc(templates_dir: Option<&std::path::Path>, a: &LxcArgs) -> Result<i32, CliError> {
    let root = Root::from_env(SYSROOT_ENV);
    match &a.command {
        LxcCommand::Enable(e) => {
            let raw = match &e.raw {
                Some(f) => profile::read_raw_file(f)?,
                None => Vec::new(),
            };
            let hooks = match (&e.snippet, e.inline) {
                (Some(s), _) => HookStyle::Include(s.clone()),
                (None, true) => {
                    let exe = std::env::current_exe()?;
                    HookStyle::Inline(format!(
                        "{} hook lxc",
                        lxc::config::shell_quote(&exe.display().to_string())
                    ))
                }
                (None, false) => HookStyle::default_for_host(),
            };
            let account = e.user.as_deref().map(user::account).transpose()?;
            let lxcpath = match (&e.lxcpath, &account) {
                (Some(p), _) => p.clone(),
                (None, Some(a)) => user::default_lxcpath(a),
                (None, None) => PathBuf::from(DEFAULT_LXCPATH),
            };
            let opts = EnableOptions {
                lxcpath,
                nesting: e.nesting,
                raw,
                force: e.force,
                hooks,
            };
            let t = templates(templates_dir)?;
            let r = match &account {
                Some(a) => user::enable_user(a, &e.name, &opts, &root_settings()?, &t)?,
                None => lxc::enable(&e.name, &opts, &root, &t, &Parser::new())?,
            };
            for w in &r.warnings {
                eprintln!("aa-virt: warning: {w}");
            }
            println!(
                "{}: {} (profile {}, namespace {}){}",
                e.name,
                if r.changed {
                    "enabled"
                } else {
                    "already enabled"
                },
                r.names.profile,
                r.names.namespace,
                account
                    .map(|a| format!(", registered to user {} and loaded", a.name))
                    .unwrap_or_default()
            );
            Ok(EXIT_OK)
        }
        LxcCommand::Disable(d) => {
            let s = root_settings()?;
            let ct = lxc::Container::open(&d.name, &d.lxcpath)?;
            let names = ct.names();
            if user::registration(&s.layout, &names)?.is_some() {
                user::disable_user(&names, &s)?;
                println!("{}: user registration removed, profile unloaded", d.name);
            }
            let r = lxc::disable(&d.name, &d.lxcpath, &root, &s.layout)?;
            for w in &r.warnings {
                eprintln!("aa-virt: warning: {w}");
            }
            println!(
                "{}: {}",
                d.name,
                if r.changed {
                    "disabled"
                } else {
                    "was not enabled"
                }
            );
            Ok(EXIT_OK)
        }
        LxcCommand::Profile(p) => {
            let ct = lxc::Container::open(&p.name, &p.lxcpath)?;
            let mode = ct
                .managed_mode()
                .unwrap_or(aa_virt::apparmor::ContainerMode::Stacked);
            let parser = Parser::new();
            let r = profile::render_stored(
                &ct,
                mode,
                &templates(templates_dir)?,
                lxc::probe_options(&parser),
                &Layout::from_env().allow_dir,
            )?;
            if p.check {
                r.check(&p.name, &parser)?;
                eprintln!(
                    "aa-virt: {} ({}) compiles with apparmor_parser",
                    r.names.profile, p.name
                );
            }
            print!("{}", r.text);
            Ok(EXIT_OK)
        }
        LxcCommand::LoadUsers => {
            let mut rc = EXIT_OK;
            for (path, res) in user::load_users(&root_settings()?) {
                match res {
                    Ok(r) => println!("{} (user {}): loaded {}", r.container, r.user, r.label),
                    Err(e) => {
                        eprintln!("aa-virt: error: {}: {e}", path.display());
                        rc = EXIT_ERROR;
                    }
                }
            }
            Ok(rc)
        }
    }
}

/// The root commands' settings: the environment and the configuration
/// file (a file that does not parse is an error, as in the hooks).
fn root_settings() -> Result<Settings, CliError> {
    Ok(settings(false, &root_config()?))
}

/// The hooks' and the root commands' settings, from the environment and
/// the configuration.
fn settings(allow_unconfined: bool, cfg: &aa_virt::config::Config) -> Settings {
    Settings {
        root: Root::from_env(SYSROOT_ENV),
        layout: Layout::from_env(),
        parser: Parser::new(),
        allow_unconfined,
        allow_incomplete: env_flag(ALLOW_INCOMPLETE_ENV),
        settle: Duration::from_secs(10),
        euid: user::effective_uid(),
        userns_policy: cfg.lxc_userns_policy,
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.as_str(), "1" | "yes" | "true"))
}

fn hook_log(env: Option<&HookEnv>, line: &str) {
    let Some(path) = std::env::var_os(HOOK_LOG_ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    let (t, n) = env
        .map(|e| (e.hook_type.as_str(), e.name.as_str()))
        .unwrap_or(("?", "?"));
    // Hooks of several containers may log at once.
    let _ = aa_virt::store::append_line(Path::new(&path), &format!("{t} {n} {line}"));
}

/// Run `aa-virt hook lxc [NAME lxc HOOKTYPE ...]`. Failures are printed on
/// standard output too, since LXC logs only that.
pub fn run_hook(templates_dir: Option<&std::path::Path>, args: &[String]) -> i32 {
    let fail = |env: Option<&HookEnv>, msg: String| {
        println!("aa-virt: error: {msg}");
        eprintln!("aa-virt: error: {msg}");
        hook_log(env, &format!("error: {msg}"));
        EXIT_ERROR
    };
    let env = match HookEnv::from_process(args) {
        Ok(e) => e,
        Err(e) => return fail(None, e.to_string()),
    };
    // The same configuration file as the libvirt hook: `fail = "open"`
    // allows unconfined containers as it allows unconfined VMs. A file that
    // does not parse fails the start (closed), naming the file and line.
    let cfg_path = aa_virt::config::Config::default_path();
    let cfg = match aa_virt::config::Config::load(&cfg_path) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                Some(&env),
                format!("{} hook for container {}: {e}", env.hook_type, env.name),
            )
        }
    };
    let templates = match templates_for(templates_dir, &cfg) {
        Ok(t) => t,
        Err(e) => {
            return fail(
                Some(&env),
                format!("{} hook for container {}: {e}", env.hook_type, env.name),
            )
        }
    };
    let settings = settings(
        env_flag(ALLOW_UNCONFINED_ENV) || cfg.fail == aa_virt::config::FailMode::Open,
        &cfg,
    );
    match hook::run(&env, &settings, &templates) {
        Ok(out) => {
            if let hook::LxcHookOutcome::Unconfined(why) = &out {
                eprintln!(
                    "aa-virt: warning: container {} runs unconfined: {why}",
                    env.name
                );
            }
            println!(
                "aa-virt: {} hook for container {}: {out}",
                env.hook_type, env.name
            );
            hook_log(Some(&env), &format!("ok: {out}"));
            EXIT_OK
        }
        Err(e) => fail(Some(&env), format!("{} hook: {e}", env.hook_type)),
    }
}

/// The container `allow`/`disallow` act on: one aa-virt manages (its
/// config carries aa-virt's label).
pub(super) fn managed(name: &str, lxcpath: &Path) -> Result<lxc::Container, CliError> {
    let ct = lxc::Container::open(name, lxcpath)?;
    if ct.managed_mode().is_none() {
        return Err(format!(
            "container {name} in {}: aa-virt does not manage it; run `aa-virt lxc enable {name}` first",
            lxcpath.display()
        )
        .into());
    }
    Ok(ct)
}

/// The container's policy as its next load renders it (its config and the
/// allowances stored in `allow_dir`), read back for `explain`-style checks.
pub(super) fn rendered_policy(
    ct: &lxc::Container,
    templates_dir: Option<&Path>,
    allow_dir: &Path,
) -> Result<Policy, CliError> {
    let names = ct.names();
    let mode = ct
        .managed_mode()
        .unwrap_or(aa_virt::apparmor::ContainerMode::Stacked);
    let parser = Parser::new();
    let r = profile::render_stored(
        ct,
        mode,
        &templates(templates_dir)?,
        lxc::probe_options(&parser),
        allow_dir,
    )?;
    let dir = aa_virt::store::tempdir()?;
    let file = dir.join(names.file_name());
    let res = std::fs::write(&file, &r.text)
        .map_err(CliError::from)
        .and_then(|()| {
            // The scratch dir first, so that rules are named after the
            // profile's file name, not the scratch path.
            let dirs = [dir.clone(), PathBuf::from("/etc/apparmor.d")];
            Policy::load(&file, &dirs).map_err(CliError::from)
        });
    let _ = std::fs::remove_dir_all(&dir);
    res
}

/// Load a running container's profile again (its allowances changed);
/// false when it is not loaded.
pub(super) fn reload_if_running(
    ct: &lxc::Container,
    templates_dir: Option<&Path>,
) -> Result<bool, CliError> {
    let cfg = root_config()?;
    Ok(hook::reload_if_loaded(
        ct,
        &settings(false, &cfg),
        &templates_for(templates_dir, &cfg)?,
    )?)
}
