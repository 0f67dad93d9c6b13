//! Make a change to a guest's aa-virt state (allowances, mode) effective
//! at once for a running libvirt domain: its live XML is read from libvirt
//! and goes through the hook's own render-write-load path, as when libvirt
//! reconnects to a running domain. A render or load that fails leaves the
//! previous policy in force (see [`crate::libvirt::profile::Rendered::install`]).

use std::path::Path;

use super::conn::{Conn, ConnError};
use super::hook::{Hook, HookError};
use crate::config::{Config, ConfigError};

/// Why a running guest's policy could not be refreshed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// libvirt could not be asked.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The configuration cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Rendering or loading failed (the previous policy stays in force).
    #[error("guest {guest}: the change is stored but not in force yet: {source}")]
    Hook {
        /// Guest name.
        guest: String,
        /// Why.
        source: Box<HookError>,
    },
}

/// What [`refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// The running guest's policy was rendered again and loaded; the notes
    /// say what changed.
    Reloaded(Vec<String>),
    /// The domain is not running: its next start renders the change.
    NotRunning,
    /// libvirt has no such domain.
    NotFound,
}

/// Render and load the policy of domain `guest` (name or UUID) at `uri`
/// if it runs, with the configuration at `config_path`.
pub fn refresh(uri: &str, guest: &str, config_path: &Path) -> Result<Refreshed, RefreshError> {
    let conn = Conn::open(uri)?;
    let res = (|| {
        let Some(d) = conn.find(guest)? else {
            return Ok(Refreshed::NotFound);
        };
        if !d.is_active() {
            return Ok(Refreshed::NotRunning);
        }
        let xml = conn.xml(&d.uuid.hyphenated().to_string())?;
        let config = Config::load(config_path)?;
        let hook_err = |source| RefreshError::Hook {
            guest: d.name.clone(),
            source: Box::new(source),
        };
        let hook = Hook::new(config, config_path).map_err(hook_err)?;
        let args = [
            d.name.clone(),
            "reconnect".into(),
            "begin".into(),
            "-".into(),
        ];
        let out = hook.run("qemu", &args, &xml).map_err(hook_err)?;
        Ok(Refreshed::Reloaded(
            out.notes.into_iter().chain(out.warnings).collect(),
        ))
    })();
    if let Err(e) = conn.close() {
        tracing::debug!("closing {uri}: {e}");
    }
    res
}
