//! Backing chains read from image headers (qcow2, qcow, qed, vmdk).
//!
//! Only images whose format is declared are read, and a raw or undeclared
//! image is never probed: a guest can write anything into a raw image,
//! including a fake qcow2 header naming `/etc/shadow` as its backing file.
//! The top image's format comes from the domain XML; each backing layer's
//! format comes from the header of the image that names it. A layer whose
//! format is not recorded there is refused ([`ImageError::UnrecordedFormat`]),
//! exactly where QEMU would have probed it.
//!
//! Reads are bounded: one 4 KiB read per header in the common case, at most
//! [`MAX_HEADER_BYTES`] (binary headers) or [`MAX_DESCRIPTOR_BYTES`] (VMDK
//! text descriptors), never the image data. Names are capped as QEMU caps
//! them. Chains stop at [`MAX_CHAIN_DEPTH`] layers and on a loop.
//!
//! The paths returned are not vetted here: the policy layer resolves and
//! checks every one of them (a backing name of `/etc/shadow` is refused
//! there, naming the layer).
//!
//! [`parse_header`] is a pure function over bytes, for fuzzing.
//!
//! For callers: [`read_chain`] returns everything QEMU opens because of the
//! headers. Grant [`Chain::top_extras`] the top disk's own access (a qcow2
//! data file or VMDK extents are written through the top), each layer and
//! its [`Layer::extras`] read access, and record each [`Chain::not_local`]
//! entry as a skipped device with its reason. Every error must fail the
//! render: in particular [`ImageError::UnrecordedFormat`] is the
//! "unknown format" marker, naming the layer that would have been probed,
//! and the guest must not start with a profile that silently lacks it.
//! [`chain`] is the older entry point and returns the layers only.

mod chain;
mod header;
mod qcow2;
mod qed;
mod vmdk;

use std::path::{Path, PathBuf};

pub use chain::{chain, read_chain};
pub use header::parse_header;

/// Deepest chain followed before giving up.
pub const MAX_CHAIN_DEPTH: usize = 200;

/// Bytes read from each image first; every header QEMU writes fits.
pub const FIRST_READ: usize = 4096;

/// Most bytes read from one binary header (qcow2 header and extensions,
/// qed header, the descriptor area of a VMDK sparse extent).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Most bytes read from a VMDK text descriptor file (a split image of a
/// few TiB lists a few thousand extents).
pub const MAX_DESCRIPTOR_BYTES: usize = 256 * 1024;

/// Longest qcow/qcow2 backing file name (the qcow2 spec's limit).
pub const QCOW2_MAX_BACKING_NAME: usize = 1023;

/// Longest qed or vmdk parent name and qcow2 data file name.
pub const MAX_NAME: usize = 4095;

/// Image formats whose headers we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// qcow2 (versions 2 and 3).
    Qcow2,
    /// qcow version 1.
    Qcow,
    /// QEMU enhanced disk.
    Qed,
    /// VMDK: a text descriptor, or a sparse extent with an embedded one.
    Vmdk,
}

impl ImageFormat {
    /// The format's name as libvirt and QEMU spell it.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Qcow => "qcow",
            ImageFormat::Qed => "qed",
            ImageFormat::Vmdk => "vmdk",
        }
    }
}

/// What a declared format name means for chain reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// A format with a backing file field that we read.
    Reads(ImageFormat),
    /// A format that cannot have a backing file (raw, iso, luks, vdi ...):
    /// the chain ends here and the image is never opened.
    NoBacking,
    /// A format we do not know: refused rather than guessed at.
    Unknown,
}

/// Classify a declared format name (from the XML or a parent's header).
pub fn declared(format: &str) -> Declared {
    match format {
        "qcow2" => Declared::Reads(ImageFormat::Qcow2),
        "qcow" => Declared::Reads(ImageFormat::Qcow),
        "qed" => Declared::Reads(ImageFormat::Qed),
        "vmdk" => Declared::Reads(ImageFormat::Vmdk),
        "raw" | "iso" | "host_device" | "host_cdrom" | "luks" | "vdi" | "vhdx" | "vpc"
        | "parallels" | "dmg" | "cloop" | "bochs" | "fat" | "dir" | "vvfat" | "ploop" => {
            Declared::NoBacking
        }
        _ => Declared::Unknown,
    }
}

/// What one header says about the files QEMU opens because of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// The backing file it names, if any (the name as stored).
    pub backing: Option<BackingName>,
    /// qcow2 external data file name (only when the data-file feature bit
    /// is set, as QEMU opens it only then).
    pub data_file: Option<Vec<u8>>,
    /// VMDK extent file names that QEMU opens (`RW` lines of a supported
    /// type), in descriptor order.
    pub extents: Vec<Vec<u8>>,
}

/// A backing file name and the format recorded for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingName {
    /// The name as stored in the header (relative names are relative to
    /// the directory of the image that stores them).
    pub name: Vec<u8>,
    /// The format recorded for it, or `None` when the header does not say
    /// (QEMU would probe it; we refuse).
    pub format: Option<String>,
}

/// One backing layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Its path (relative names are resolved against the directory of the
    /// image that names them, as QEMU does; not canonicalised).
    pub path: PathBuf,
    /// Its format, as recorded by its parent's header.
    pub format: Option<String>,
    /// Other files QEMU opens for this layer (data file, VMDK extents), read-only
    /// like the layer.
    pub extras: Vec<Extra>,
}

/// A file QEMU opens on behalf of an image besides the image itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    /// Its path, resolved like a backing name.
    pub path: PathBuf,
    /// What it is.
    pub kind: ExtraKind,
}

/// Kinds of [`Extra`] files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraKind {
    /// A qcow2 external data file (needs the same access as its image).
    DataFile,
    /// A VMDK extent (needs the same access as its descriptor).
    Extent,
}

/// Something in the chain that is not a local file and gets no rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLocal {
    /// 0 for the top image's own files, N for backing layer N.
    pub depth: usize,
    /// The name as stored.
    pub name: String,
    /// Why it gets no rule.
    pub reason: String,
}

/// Everything the headers of a disk's chain make QEMU open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    /// Files the top image's own header names (data file, extents); they
    /// need the top's access.
    pub top_extras: Vec<Extra>,
    /// Backing layers, nearest first (layer 1 is `layers[0]`); read-only.
    pub layers: Vec<Layer>,
    /// Names that are not local files (network backing stores, protocol
    /// extents), with the reason they get no rule.
    pub not_local: Vec<NotLocal>,
}

/// Image header errors. Each names the image and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image could not be opened or read.
    #[error("cannot read {format} image {path}: {source}")]
    Io {
        /// The image.
        path: PathBuf,
        /// Its declared format.
        format: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The image is neither a regular file nor a block device.
    #[error("{format} image {path} is a {kind}, not a regular file or block device; refusing to read it")]
    NotAFile {
        /// The image.
        path: PathBuf,
        /// Its declared format.
        format: &'static str,
        /// What it is.
        kind: &'static str,
    },
    /// The header is malformed or not of the declared format.
    #[error("{format} image {}: {reason}", show(path))]
    Malformed {
        /// The image (empty when parsing a buffer).
        path: PathBuf,
        /// Its declared format.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The header points past the end of the file.
    #[error(
        "{format} image {} is truncated: its header needs {need} bytes but the file has {have}",
        show(path)
    )]
    Truncated {
        /// The image (empty when parsing a buffer).
        path: PathBuf,
        /// Its declared format.
        format: &'static str,
        /// Bytes the header needs.
        need: u64,
        /// Bytes there are.
        have: u64,
    },
    /// The header area is larger than we are willing to read.
    #[error("{format} image {path}: header needs {need} bytes, over the limit of {limit}; describe the chain with <backingStore> in the domain XML instead")]
    HeaderTooLarge {
        /// The image.
        path: PathBuf,
        /// Its declared format.
        format: &'static str,
        /// Bytes the header needs.
        need: u64,
        /// The limit.
        limit: usize,
    },
    /// A backing layer whose format is not recorded in its parent's header.
    #[error("backing file {layer} (layer {depth}, named by {named_by}) has no format recorded in its parent's header; refusing to probe it (a raw image can pretend to be any format). Record the format with `qemu-img rebase -u -F FORMAT -b {layer} {named_by}` or describe the chain with <backingStore> in the domain XML")]
    UnrecordedFormat {
        /// The layer's path.
        layer: PathBuf,
        /// Its depth (1 = the top's backing file).
        depth: usize,
        /// The image whose header names it.
        named_by: PathBuf,
    },
    /// A declared or recorded format we do not know.
    #[error("image {path} has format {format:?}, which aa-virt cannot read backing files from; describe the chain with <backingStore> in the domain XML")]
    UnknownFormat {
        /// The image.
        path: PathBuf,
        /// The format name.
        format: String,
    },
    /// The chain is deeper than [`MAX_CHAIN_DEPTH`].
    #[error("backing chain of {top} is deeper than {MAX_CHAIN_DEPTH} layers (stopped at {last}); flatten it with `qemu-img convert` or `virsh blockpull`")]
    TooDeep {
        /// The top image.
        top: PathBuf,
        /// The last layer read.
        last: PathBuf,
    },
    /// The chain comes back to an image already in it.
    #[error("backing chain loops: {}", chain_text(chain))]
    Loop {
        /// The chain from the top to the repeated image.
        chain: Vec<PathBuf>,
    },
}

fn show(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        "(buffer)".into()
    } else {
        p.display().to_string()
    }
}

fn chain_text(chain: &[PathBuf]) -> String {
    chain
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

impl ImageError {
    /// Attach the image path to an error from [`parse_header`].
    pub(super) fn at(mut self, p: &Path) -> Self {
        if let ImageError::Malformed { path, .. } | ImageError::Truncated { path, .. } = &mut self {
            *path = p.to_path_buf();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_formats() {
        assert_eq!(declared("qcow2"), Declared::Reads(ImageFormat::Qcow2));
        assert_eq!(declared("raw"), Declared::NoBacking);
        assert_eq!(declared("bogus"), Declared::Unknown);
    }
}
