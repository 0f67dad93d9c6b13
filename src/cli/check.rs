//! `aa-virt check`: the upgrade canary (see `aa_virt::canary`).

use std::path::PathBuf;

use clap::Args;

use super::{CliError, Targets, EXIT_ERROR, EXIT_OK};

/// `aa-virt check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Where to look for guests (as for `list`).
    #[command(flatten)]
    pub targets: Targets,
    /// The apparmor_parser to compile with (default: the configured one,
    /// the host's), e.g. the next release's, copied from its package.
    #[arg(long, value_name = "PATH")]
    pub parser: Option<PathBuf>,
    /// Kernel feature set to compile for: a features file
    /// (/usr/share/apparmor-features/features of the next release) or a
    /// kernel's features directory (default: the running kernel's, else
    /// the one the apparmor package ships).
    #[arg(long, value_name = "FILE")]
    pub features: Option<PathBuf>,
    /// The feature set the guests run under now, to report what the new
    /// one starts to mediate (default: the running kernel's, else the
    /// shipped file).
    #[arg(long, value_name = "FILE")]
    pub current_features: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Compile every managed guest's policy; exit 1 if any would fail.
pub fn cmd_check(a: &CheckArgs) -> Result<i32, CliError> {
    let list = a.targets.options_configured()?;
    let mut parser = list.parser.clone();
    if let Some(p) = &a.parser {
        parser.bin = p.clone();
    }
    if let Some(f) = &a.features {
        parser.features = Some(f.clone());
    }
    let rep = aa_virt::canary::check(&aa_virt::canary::CheckOptions {
        list,
        parser,
        current: a.current_features.clone(),
    })?;
    for w in &rep.warnings {
        tracing::warn!("{w}");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print!("{}", aa_virt::canary::text(&rep));
    }
    for g in rep.failing() {
        eprintln!(
            "aa-virt: guest {} ({}): {} would not compile: {}",
            g.guest,
            g.kind,
            g.path,
            g.error.as_deref().unwrap_or("?")
        );
    }
    Ok(if rep.failing().next().is_some() {
        EXIT_ERROR
    } else {
        EXIT_OK
    })
}
