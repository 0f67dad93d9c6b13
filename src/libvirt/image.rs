//! Backing chains read from image headers (qcow2, qed, vmdk descriptors).
//!
//! Only images whose format is declared are read, and a raw or undeclared
//! image is never probed: a guest can write anything into a raw image,
//! including a fake qcow2 header naming `/etc/shadow` as its backing file.

use std::path::{Path, PathBuf};

/// Deepest chain followed before giving up.
pub const MAX_CHAIN_DEPTH: usize = 200;

/// One backing layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Its path (absolute; relative names are resolved against the image
    /// that names them).
    pub path: PathBuf,
    /// Its format, when the parent declared it.
    pub format: Option<String>,
}

/// Image header errors.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Placeholder until the header reader lands.
    #[error("reading backing chains from {0} image headers is not implemented yet")]
    Unsupported(String),
}

/// The backing chain below `top` (not including `top`), given its declared format.
pub fn chain(_top: &Path, format: Option<&str>) -> Result<Vec<Layer>, ImageError> {
    match format {
        None | Some("raw") => Ok(Vec::new()),
        Some(f) => Err(ImageError::Unsupported(f.to_string())),
    }
}
