//! Command line: argument parsing and the top-level commands. Each command
//! is a thin layer over the library; errors become one clear line on stderr
//! and a documented exit code.

use std::path::{Path, PathBuf};

use clap::{Args, Parser as ClapParser, Subcommand};

mod boot;
mod check;
mod denials;
mod list;
use list::{cmd_list, cmd_reload, cmd_status, ListArgs, ReloadArgs, StatusArgs, Targets};
mod lxc;
mod manpages;

use aa_virt::apparmor::{Parser, SYSROOT_ENV};
use aa_virt::libvirt::{self, profile, read_input, ReadOptions};
use aa_virt::policy::Templates;

/// Success.
pub const EXIT_OK: i32 = 0;
/// Any error.
pub const EXIT_ERROR: i32 = 1;
/// Bad command line.
pub const EXIT_USAGE: i32 = 2;
/// `list --check`: a guest is not confined as expected.
pub const EXIT_NOT_CONFINED: i32 = 3;
/// `list --check`: every running guest is confined, but one runs policy
/// older than the files on disk (`aa-virt reload` applies them).
pub const EXIT_STALE: i32 = 4;

/// A boxed error with a message meant for the user.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// sVirt-style AppArmor confinement for libvirt guests and LXC containers.
#[derive(Debug, ClapParser)]
#[command(name = "aa-virt", version, about, long_about = None)]
pub struct Cli {
    /// Options for every command.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Directory overriding the built-in templates (same layout as templates/).
    #[arg(long, env = "AA_VIRT_TEMPLATES", global = true, value_name = "DIR")]
    pub templates: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render a libvirt guest's profile from its domain XML (dry run).
    Profile(ProfileArgs),
    /// The libvirt hook: `aa-virt hook qemu GUEST OP SUBOP EXTRA`, domain XML on stdin;
    /// LXC's hooks: `aa-virt hook lxc` (pre-start, start-host, post-stop).
    Hook(HookArgs),
    /// Install aa-virt's profile, abstractions, daemon overrides and config, and the libvirt hook (or, with --mode helper, aa-virt in place of libvirt's virt-aa-helper).
    Install(InstallCmdArgs),
    /// Remove what `install` added and undo helper mode's diversion (files edited since are kept and reported).
    Uninstall(InstallArgs),
    /// Print a shell completion script (bash, zsh, fish) to standard output.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages and completions into DIR (used by packaging).
    #[command(hide = true)]
    GenDocs {
        /// Output directory (gets man/ and completions/).
        dir: PathBuf,
    },
    /// What the kernel and apparmor_parser support (stacking, namespaces, mount mediation, rules).
    Features(FeaturesArgs),
    /// Act as libvirt's virt-aa-helper (`aa-virt helper -h`); also what runs
    /// when aa-virt is invoked under the name `virt-aa-helper`.
    #[command(disable_help_flag = true)]
    Helper(HelperArgs),
    /// Every libvirt domain and LXC container with its real confinement: profile, loaded, mode, process label, namespace, rules, denials.
    List(ListArgs),
    /// One guest in detail: rules with their origins, files, cache, load time, process label, recent denials.
    Status(StatusArgs),
    /// LXC containers: enable or disable confinement, show a container's profile.
    Lxc(lxc::LxcArgs),
    /// Reload running guests' policy from the profile files on disk (after
    /// editing /etc/apparmor.d/local/ or upgrading the abstraction); a
    /// running container's profile is rendered again first (a new template).
    Reload(ReloadArgs),
    /// AppArmor denials (and complain-mode ALLOWED records) per guest, folded, each traced to its device or to the narrowest fix.
    Denials(denials::DenialsArgs),
    /// Is a host path allowed for a guest, by which rule, and where does that rule come from?
    Explain(denials::ExplainArgs),
    /// Grant a libvirt guest one more host path, persistently (vetted like a disk; in force at once for a running guest).
    Allow(denials::AllowArgs),
    /// Remove an allowance made with `aa-virt allow`.
    Disallow(denials::DisallowArgs),
    /// Put a libvirt guest in complain or enforce mode, persistently (in force at once for a running guest).
    Mode(denials::ModeArgs),
    /// Upgrade canary: compile every managed guest's policy with another
    /// apparmor_parser and kernel feature set, loading nothing; name the
    /// guests that would fail and the rule classes the new ABI mediates.
    Check(check::CheckArgs),
    /// Load every managed libvirt guest's policy (from the cache when it is
    /// current), each on its own; run at boot by aa-virt-load.service.
    BootLoad(boot::BootLoadArgs),
}

/// `aa-virt helper`: everything after it goes to the helper's own parser.
#[derive(Debug, Args)]
pub struct HelperArgs {
    /// virt-aa-helper options, e.g. `-r -u libvirt-UUID -F FILE`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// `aa-virt features`.
#[derive(Debug, Args)]
pub struct FeaturesArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Do not probe apparmor_parser (kernel facts only).
    #[arg(long)]
    pub no_probe: bool,
}

fn cmd_features(a: &FeaturesArgs) -> Result<i32, CliError> {
    let root = aa_virt::apparmor::Root::from_env(SYSROOT_ENV);
    let f = if a.no_probe {
        aa_virt::apparmor::Features::kernel(&root)
    } else {
        aa_virt::apparmor::Features::detect(&root, &Parser::new())
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        print!("{}", f.report());
        if let Some(h) = aa_virt::policy::abi::HostSupport::of(&f) {
            println!(
                "profiles declare:      {}",
                aa_virt::policy::abi::summary(h)
            );
        }
    }
    Ok(EXIT_OK)
}

/// `aa-virt hook`.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// The hook object: libvirt's hook script name (`qemu`), or `lxc`.
    pub object: String,
    /// libvirt's arguments: GUEST OP SUBOP EXTRA.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Configuration file.
    #[arg(long, env = "AA_VIRT_CONFIG", value_name = "FILE", default_value = aa_virt::config::DEFAULT_PATH)]
    pub config: PathBuf,
}

/// `aa-virt install` / `aa-virt uninstall`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Root of the target system (for packaging and tests); only `/` touches the kernel.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// The aa-virt binary as the target system sees it (default: this binary).
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
}

/// `aa-virt install`.
#[derive(Debug, Args)]
pub struct InstallCmdArgs {
    /// Where and what to install.
    #[command(flatten)]
    pub base: InstallArgs,
    /// How libvirt runs aa-virt: through the libvirt hook, or in place of libvirt's virt-aa-helper. Installing one mode undoes the other (`aa-virt uninstall` undoes either); restart libvirtd or virtqemud afterwards.
    #[arg(long, value_enum, default_value_t = aa_virt::install::Mode::Hook)]
    pub mode: aa_virt::install::Mode,
}

/// `aa-virt profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Domain XML file, or - for standard input.
    #[arg(default_value = "-")]
    pub xml: String,
    /// Print only the generated rules (the .files content).
    #[arg(long)]
    pub files_only: bool,
    /// Compile the result with apparmor_parser (nothing is loaded).
    #[arg(long)]
    pub check: bool,
    /// Print each rule with the device it comes from, and the devices that get no rule and why.
    #[arg(long)]
    pub explain: bool,
    /// Do not read backing chains from image headers when the XML has none.
    #[arg(long)]
    pub no_probe: bool,
    /// Render the profile in complain mode.
    #[arg(long)]
    pub complain: bool,
}

fn cmd_profile(g: &Global, a: &ProfileArgs) -> Result<i32, CliError> {
    let xml = read_input(&a.xml)?;
    let guest = libvirt::parse(
        &xml,
        &ReadOptions {
            probe_chains: !a.no_probe,
            ..ReadOptions::default()
        },
    )?;
    // The guest's allowances (`aa-virt allow`) are part of what its start
    // renders, so they are part of what this shows.
    let state = std::env::var_os(aa_virt::lxc::ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(profile::Layout::default, |r| {
            profile::Layout::under(Path::new(&r))
        });
    let guest = state.with_allowances(&guest)?;
    let templates = Templates::load(g.templates.as_deref())?;
    let r = profile::render(&guest, &templates, a.complain)?;
    if a.check {
        r.check(&guest, &templates, &Parser::new())?;
        eprintln!(
            "aa-virt: {} ({}) compiles with apparmor_parser",
            r.name, guest.name
        );
    }
    let mut out = String::new();
    if a.explain {
        for rule in r.rules.rules() {
            out.push_str(&format!(
                "{}\n      from: {}\n",
                rule.render(),
                rule.origins.join("; ")
            ));
        }
        for s in &guest.skipped {
            out.push_str(&format!("  # no rule: {}: {}\n", s.origin, s.reason));
        }
    } else if a.files_only {
        out = r.files;
    } else {
        let layout = profile::Layout::default();
        out.push_str(&format!(
            "# ==> {} <==\n",
            layout.profile_path(&r.name).display()
        ));
        out.push_str(&r.profile);
        out.push_str(&format!(
            "\n# ==> {} <==\n",
            layout.files_path(&r.name).display()
        ));
        out.push_str(&r.files);
    }
    print!("{out}");
    Ok(EXIT_OK)
}

fn cmd_hook(g: &Global, a: &HookArgs) -> Result<i32, CliError> {
    use aa_virt::libvirt::hook::{Hook, Op};
    // LXC: no XML on stdin; the container is named by LXC's environment.
    if a.object == "lxc" {
        return Ok(lxc::run_hook(g.templates.as_deref(), &a.args));
    }
    // Always drain stdin: libvirt writes the XML whatever the operation.
    let xml = read_input("-");
    let op = Op::parse(a.args.get(1).map(String::as_str).unwrap_or(""));
    if matches!(op, Op::Unknown(_)) && a.object == "qemu" {
        tracing::info!(
            "ignoring unknown hook operation {:?} for guest {}",
            op.name(),
            a.args.first().map(String::as_str).unwrap_or("")
        );
        return Ok(EXIT_OK);
    }
    let xml = xml.map_err(|e| {
        format!(
            "{} hook for guest {}: {e}",
            op.name(),
            a.args.first().map(String::as_str).unwrap_or("?")
        )
    })?;
    let config = aa_virt::config::Config::load(&a.config)?;
    let hook = Hook::new(config, &a.config)?;
    let out = hook.run(&a.object, &a.args, &xml)?;
    // One line per event, to stderr (libvirt's log on failure) and the journal.
    for n in &out.notes {
        tracing::info!("{n}");
    }
    for w in &out.warnings {
        tracing::warn!("{w}");
    }
    if let Some(s) = out.stdout {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        o.write_all(s.as_bytes())?;
        o.flush()?;
    }
    Ok(EXIT_OK)
}

fn cmd_install(
    g: &Global,
    a: &InstallArgs,
    mode: aa_virt::install::Mode,
    remove: bool,
) -> Result<i32, CliError> {
    use aa_virt::install::{self, Options};
    let exe = match &a.bin {
        Some(b) => b.clone(),
        None => install::current_exe()?,
    };
    let o = Options {
        root: a.root.clone(),
        exe,
        mode,
    };
    let templates = Templates::load(g.templates.as_deref())?;
    let kernel = aa_virt::apparmor::select(aa_virt::apparmor::SystemKernel::at(
        aa_virt::apparmor::Root::system(),
    ));
    let rep = if remove {
        install::uninstall(&o, &templates, &Parser::new(), kernel.as_ref())?
    } else {
        install::install(&o, &templates, &Parser::new(), kernel.as_ref())?
    };
    for l in &rep.lines {
        println!("{l}");
    }
    if !rep.changed {
        println!("nothing changed");
    }
    Ok(EXIT_OK)
}

fn cmd_gen_docs(dir: &std::path::Path) -> Result<i32, CliError> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let pages = manpages::write_man_pages(&cmd, &dir.join("man"))?;
    let comps = manpages::write_completions(&cmd, &dir.join("completions"))?;
    for p in pages.iter().chain(&comps) {
        println!("{}", p.display());
    }
    Ok(EXIT_OK)
}

/// Log to stderr (libvirt and LXC put a hook's stderr in their logs), and
/// also to the journal when journald is running, so every action leaves one
/// line there too.
fn init_logging(g: &Global, command: &Command) {
    use tracing_subscriber::EnvFilter;
    let default = if g.quiet {
        "error"
    } else {
        match g.verbose {
            // A hook's one line per guest event is its log (daemon log,
            // journal); so is reload's one line per profile.
            0 if matches!(
                command,
                Command::Hook(_) | Command::Reload(_) | Command::BootLoad(_)
            ) =>
            {
                "info"
            }
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_env("AA_VIRT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // No colour codes in daemon logs and hook errors (stderr is a pipe there).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time();
    let journal = std::path::Path::new("/run/systemd/journal/socket")
        .exists()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|l| l.with_syslog_identifier("aa-virt".into()));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(journal)
        .try_init();
}

/// Run the command line; returns the exit code.
pub fn main() -> i32 {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if Path::new(&argv0).file_name() == Some("virt-aa-helper".as_ref()) {
        return libvirt::helper::main("virt-aa-helper", std::env::args_os().skip(1).collect());
    }
    // `aa-virt helper ARGS` hands ARGS to the helper untouched: clap would
    // otherwise take aa-virt's global flags (-v, -q, ...) out of them, and
    // the helper must see exactly the command line libvirt gave it.
    if std::env::args_os().nth(1).is_some_and(|a| a == "helper") {
        return libvirt::helper::main("aa-virt helper", std::env::args_os().skip(2).collect());
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    init_logging(&cli.global, &cli.command);
    let res = match &cli.command {
        Command::Profile(a) => cmd_profile(&cli.global, a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "aa-virt",
                &mut std::io::stdout(),
            );
            Ok(EXIT_OK)
        }
        Command::GenDocs { dir } => cmd_gen_docs(dir),
        Command::Features(a) => cmd_features(a),
        Command::Helper(a) => return libvirt::helper::main("aa-virt helper", a.args.clone()),
        Command::Hook(a) => cmd_hook(&cli.global, a),
        Command::Install(a) => cmd_install(&cli.global, &a.base, a.mode, false),
        Command::Uninstall(a) => {
            cmd_install(&cli.global, a, aa_virt::install::Mode::default(), true)
        }
        Command::List(a) => cmd_list(a),
        Command::Status(a) => cmd_status(a),
        Command::Reload(a) => cmd_reload(a),
        Command::Check(a) => check::cmd_check(a),
        Command::BootLoad(a) => boot::cmd_boot_load(a),
        Command::Lxc(a) => lxc::run_lxc(cli.global.templates.as_deref(), a),
        Command::Denials(a) => denials::run_denials(a),
        Command::Explain(a) => denials::run_explain(a),
        Command::Allow(a) => denials::run_allow(a, cli.global.templates.as_deref()),
        Command::Disallow(a) => denials::run_disallow(a, cli.global.templates.as_deref()),
        Command::Mode(a) => denials::run_mode(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aa-virt: error: {e}");
            EXIT_ERROR
        }
    }
}
