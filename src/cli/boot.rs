//! `aa-virt boot-load` (see `aa_virt::boot`), run by aa-virt-load.service.

use clap::Args;

use super::{CliError, EXIT_ERROR, EXIT_OK};

/// `aa-virt boot-load`.
#[derive(Debug, Args)]
pub struct BootLoadArgs {
    /// Configuration file (its parser and cache directory are used).
    #[arg(long, env = "AA_VIRT_CONFIG", value_name = "FILE", default_value = aa_virt::config::DEFAULT_PATH)]
    pub config: std::path::PathBuf,
    /// Guests loaded at once (default: one per CPU).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
}

/// Load every guest's policy; exit 1 when any failed (the others are
/// loaded all the same).
pub fn cmd_boot_load(a: &BootLoadArgs) -> Result<i32, CliError> {
    use aa_virt::boot::Source;
    let config = aa_virt::config::Config::load(&a.config)?;
    let root = std::env::var_os(aa_virt::lxc::ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| std::path::PathBuf::from("/"), std::path::PathBuf::from);
    let mut layout = aa_virt::libvirt::profile::Layout::under(&root);
    if root == std::path::Path::new("/") {
        layout.cache_dir = config.cache_dir.clone();
    }
    let kernel = aa_virt::apparmor::select(aa_virt::apparmor::SystemKernel::at(
        aa_virt::apparmor::Root::from_env(aa_virt::apparmor::SYSROOT_ENV),
    ));
    if let aa_virt::apparmor::KernelStatus::Unavailable(r) = kernel.status() {
        return Err(format!("AppArmor not available: {r}; no guest policy loaded").into());
    }
    let jobs = a.jobs.map_or_else(aa_virt::boot::default_jobs, usize::from);
    let done = aa_virt::boot::load_all(&layout, &config.parser(), kernel.as_ref(), jobs);
    let mut failed = 0;
    for l in &done {
        let ms = l.took.as_secs_f64() * 1000.0;
        match &l.result {
            Ok(Source::Cache) => {
                tracing::info!("{}: loaded from cache in {ms:.0} ms", l.profile)
            }
            Ok(Source::Compiled) => {
                tracing::info!("{}: compiled and loaded in {ms:.0} ms", l.profile)
            }
            Err(e) => {
                failed += 1;
                tracing::error!(
                    "{}: not loaded ({ms:.0} ms), its guest will not start until {} is fixed: {e}",
                    l.profile,
                    l.path.display()
                )
            }
        }
    }
    tracing::info!(
        "{} guest profiles loaded, {failed} failed",
        done.len() - failed
    );
    Ok(if failed > 0 { EXIT_ERROR } else { EXIT_OK })
}
