//! `aa-virt list`, `status` and `reload`: where they look for guests and
//! how they print what they found.

use std::path::PathBuf;

use aa_virt::apparmor::SYSROOT_ENV;
use aa_virt::libvirt::profile;
use clap::Args;

use super::{CliError, EXIT_ERROR, EXIT_NOT_CONFINED, EXIT_OK, EXIT_STALE};
/// Where `list` and `status` look for guests.
#[derive(Debug, Args)]
pub struct Targets {
    /// libvirt URI to query (repeatable; queried concurrently). Without
    /// --connect and --lxcpath: $LIBVIRT_DEFAULT_URI or qemu:///system (a
    /// missing daemon is a note, not an error) and LXC's lxcpath.
    #[arg(short = 'c', long = "connect", value_name = "URI")]
    pub connect: Vec<String>,
    /// LXC container directory (repeatable). Given alone, only LXC is listed.
    #[arg(short = 'P', long = "lxcpath", value_name = "DIR")]
    pub lxcpath: Vec<PathBuf>,
    /// Read denials from this audit or kernel log instead of the default
    /// (/var/log/audit/audit.log, else the journal's kernel and audit messages, else /var/log/kern.log).
    #[arg(long, value_name = "FILE", conflicts_with = "no_denials")]
    pub log: Option<PathBuf>,
    /// Do not read any log (the DENIALS column shows -).
    #[arg(long)]
    pub no_denials: bool,
    /// Look for aa-virt's policy files and cache under DIR instead of /
    /// (default: $AA_VIRT_ROOT, else /).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Configuration file (its parser and cache directory say where load
    /// records are and how the policy on disk compiles).
    #[arg(long, env = "AA_VIRT_CONFIG", value_name = "FILE", default_value = aa_virt::config::DEFAULT_PATH)]
    pub config: PathBuf,
}

impl Targets {
    /// [`Targets::options`] with the configuration's parser, and its cache
    /// directory unless everything is moved under a root.
    pub fn options_configured(&self) -> Result<aa_virt::list::ListOptions, CliError> {
        let config = aa_virt::config::Config::load(&self.config)?;
        let mut o = self.options();
        o.parser = config.parser();
        o.templates = config.templates.clone();
        let moved = self.root.is_some()
            || std::env::var_os(aa_virt::lxc::ROOT_ENV).is_some_and(|v| !v.is_empty());
        if !moved {
            o.layout.cache_dir = config.cache_dir.clone();
        }
        Ok(o)
    }

    pub fn options(&self) -> aa_virt::list::ListOptions {
        use aa_virt::list::{ListOptions, LogChoice};
        let mut o = ListOptions::system();
        if !self.connect.is_empty() || !self.lxcpath.is_empty() {
            o.uris = self.connect.clone();
            o.default_uris = false;
            o.lxcpaths = self.lxcpath.clone();
        }
        o.root = aa_virt::apparmor::Root::from_env(SYSROOT_ENV);
        let root = self.root.clone().unwrap_or_else(|| {
            std::env::var_os(aa_virt::lxc::ROOT_ENV)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from("/"), PathBuf::from)
        });
        o.layout = profile::Layout::under(&root);
        o.lxc_layout = aa_virt::lxc::Layout::under(&root);
        if self.lxcpath.is_empty() {
            o.add_user_lxcpaths();
        }
        o.log = match (&self.log, self.no_denials) {
            (Some(f), _) => LogChoice::File(f.clone()),
            (None, true) => LogChoice::Off,
            (None, false) => LogChoice::Auto,
        };
        o
    }
}

/// `aa-virt list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Where to look.
    #[command(flatten)]
    pub targets: Targets,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: aa_virt::list::report::Format,
    /// Same as --format json (schema: docs/list.schema.json).
    #[arg(long)]
    pub json: bool,
    /// Exit 3 when any running guest is not confined as expected, 4 when all are but one runs
    /// stale policy (older than its files on disk); each is named on stderr.
    #[arg(long)]
    pub check: bool,
}

/// `aa-virt status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The guest: a domain or container name, or a domain UUID.
    pub name: String,
    /// Where to look.
    #[command(flatten)]
    pub targets: Targets,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `aa-virt reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Guests to reload: libvirt domain name or UUID, profile name, or LXC
    /// container name (default: every guest whose profile is loaded).
    #[arg(value_name = "GUEST")]
    pub guests: Vec<String>,
    /// Print what would be reloaded; load nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// libvirt URI naming guests (repeatable; default as for `list`).
    #[arg(short = 'c', long = "connect", value_name = "URI")]
    pub connect: Vec<String>,
    /// LXC container directory (repeatable; default as for `list`).
    #[arg(short = 'P', long = "lxcpath", value_name = "DIR")]
    pub lxcpath: Vec<PathBuf>,
    /// Configuration file (its parser, cache directory and templates are
    /// used).
    #[arg(long, env = "AA_VIRT_CONFIG", value_name = "FILE", default_value = aa_virt::config::DEFAULT_PATH)]
    pub config: PathBuf,
}

pub fn cmd_reload(a: &ReloadArgs) -> Result<i32, CliError> {
    use aa_virt::reload::{self, ReloadOutcome};
    let targets = Targets {
        connect: a.connect.clone(),
        lxcpath: a.lxcpath.clone(),
        log: None,
        no_denials: true,
        root: None,
        config: a.config.clone(),
    };
    // The libvirt helper and hook cache where the configuration says,
    // unless everything is moved under $AA_VIRT_ROOT.
    let list = targets.options_configured()?;
    let opts = reload::ReloadOptions {
        parser: list.parser.clone(),
        list,
        dry_run: a.dry_run,
    };
    let rep = reload::reload(&opts, &a.guests)?;
    for w in &rep.warnings {
        tracing::warn!("{w}");
    }
    for (t, o) in &rep.done {
        let (g, p, f) = (&t.guest, &t.profile, t.path.display());
        let how = if t.render_from.is_some() {
            " (rendered again)"
        } else {
            ""
        };
        match o {
            ReloadOutcome::Reloaded => tracing::info!("guest {g}: reloaded {p} from {f}{how}"),
            ReloadOutcome::WouldReload => {
                tracing::info!("guest {g}: would reload {p} from {f}{how}")
            }
            ReloadOutcome::NotLoaded => tracing::info!(
                "guest {g}: {p} is not loaded, left alone (it loads at the guest's next start)"
            ),
            ReloadOutcome::Failed(e) => tracing::error!("{e}"),
        }
    }
    if rep.done.is_empty() {
        tracing::info!("no loaded aa-virt guest profile to reload");
    }
    Ok(if rep.failed() { EXIT_ERROR } else { EXIT_OK })
}

pub fn cmd_list(a: &ListArgs) -> Result<i32, CliError> {
    use aa_virt::list::report::{self, Format};
    let report = aa_virt::list::list(&a.targets.options_configured()?)?;
    let format = if a.json { Format::Json } else { a.format };
    print!("{}", report::render(&report, format));
    let mut code = EXIT_OK;
    for s in report.errors() {
        eprintln!("aa-virt: error: {}", s.error.as_deref().unwrap_or("?"));
        code = EXIT_ERROR;
    }
    if a.check {
        // Unconfined first: it decides the exit code over stale policy.
        let unconfined = report
            .unconfined()
            .map(|g| ("not confined", g, g.problems.join("; ")));
        let stale = report
            .stale()
            .map(|g| ("stale policy", g, g.policy.clone().unwrap_or_default()));
        for (what, g, why) in unconfined.chain(stale) {
            eprintln!(
                "aa-virt: {what}: {} ({}, {}): {why}",
                g.name, g.kind, g.source
            );
            if code == EXIT_OK {
                code = if what == "not confined" {
                    EXIT_NOT_CONFINED
                } else {
                    EXIT_STALE
                };
            }
        }
    }
    Ok(code)
}

pub fn cmd_status(a: &StatusArgs) -> Result<i32, CliError> {
    let d = aa_virt::list::status::status(&a.targets.options_configured()?, &a.name)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", aa_virt::list::status::text(&d));
    }
    Ok(EXIT_OK)
}
