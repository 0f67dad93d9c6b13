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

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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

/// Longest qcow2 backing format name (QEMU keeps it in 16 bytes).
const MAX_FORMAT_NAME: usize = 15;

/// Longest VMDK extent file name (QEMU reads at most 511 bytes).
const MAX_EXTENT_NAME: usize = 511;

/// Most header extensions walked in one qcow2 header.
const MAX_EXTENSIONS: usize = 1024;

const QCOW_MAGIC: &[u8; 4] = b"QFI\xfb";
const QED_MAGIC: &[u8; 4] = b"QED\0";
const VMDK4_MAGIC: &[u8; 4] = b"KDMV";
const VMDK3_MAGIC: &[u8; 4] = b"COWD";
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
const EXT_DATA_FILE: u32 = 0x4441_5441;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const QED_F_BACKING_FILE: u64 = 0x01;
const QED_F_BACKING_FORMAT_NO_PROBE: u64 = 0x04;
/// QEMU looks for a sparse VMDK's parent hint in the descriptor here.
const VMDK_SPARSE_DESC_OFFSET: usize = 0x200;

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
    fn at(mut self, p: &Path) -> Self {
        if let ImageError::Malformed { path, .. } | ImageError::Truncated { path, .. } = &mut self {
            *path = p.to_path_buf();
        }
        self
    }
}

/// The backing chain below `top` (not including `top`), given its declared
/// format. See [`read_chain`] for the extra files and non-local names.
pub fn chain(top: &Path, format: Option<&str>) -> Result<Vec<Layer>, ImageError> {
    Ok(read_chain(top, format)?.layers)
}

/// Everything the headers of `top`'s chain make QEMU open, given the format
/// the domain XML declares for `top` (`None`: undeclared, never read).
pub fn read_chain(top: &Path, format: Option<&str>) -> Result<Chain, ImageError> {
    let mut out = Chain::default();
    let Some(mut fmt_name) = format.map(str::to_string) else {
        return Ok(out); // undeclared: treated as raw, never probed
    };
    let mut cur = top.to_path_buf();
    let mut depth = 0usize;
    let mut seen_ids: HashSet<(u64, u64)> = HashSet::new();
    let mut seen_paths: HashSet<PathBuf> = HashSet::new();
    let mut walked: Vec<PathBuf> = Vec::new();
    loop {
        let fmt = match declared(&fmt_name) {
            Declared::Reads(f) => f,
            Declared::NoBacking => return Ok(out),
            Declared::Unknown => {
                return Err(ImageError::UnknownFormat {
                    path: cur,
                    format: fmt_name,
                })
            }
        };
        let file = open_image(&cur, fmt)?;
        let meta = file.metadata().map_err(|source| ImageError::Io {
            path: cur.clone(),
            format: fmt.name(),
            source,
        })?;
        walked.push(cur.clone());
        let canon = std::fs::canonicalize(&cur).unwrap_or_else(|_| cur.clone());
        if !seen_ids.insert((meta.dev(), meta.ino())) || !seen_paths.insert(canon) {
            return Err(ImageError::Loop { chain: walked });
        }
        let header = read_header(&file, &cur, fmt)?;
        drop(file);
        let dir = cur.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut extras = Vec::new();
        let named = header
            .data_file
            .iter()
            .map(|n| (n, ExtraKind::DataFile))
            .chain(header.extents.iter().map(|n| (n, ExtraKind::Extent)));
        for (name, kind) in named {
            match resolve(&dir, name) {
                Resolved::Local(path) => extras.push(Extra { path, kind }),
                Resolved::NotLocal(reason) => out.not_local.push(NotLocal {
                    depth,
                    name: String::from_utf8_lossy(name).into_owned(),
                    reason,
                }),
            }
        }
        match out.layers.last_mut() {
            Some(l) if depth > 0 => l.extras = extras,
            _ => out.top_extras = extras,
        }
        let Some(b) = header.backing else {
            return Ok(out);
        };
        let next = match resolve(&dir, &b.name) {
            Resolved::Local(p) => p,
            Resolved::NotLocal(reason) => {
                out.not_local.push(NotLocal {
                    depth: depth + 1,
                    name: String::from_utf8_lossy(&b.name).into_owned(),
                    reason,
                });
                return Ok(out);
            }
        };
        depth += 1;
        if depth > MAX_CHAIN_DEPTH {
            return Err(ImageError::TooDeep {
                top: top.to_path_buf(),
                last: cur,
            });
        }
        let Some(f) = b.format else {
            return Err(ImageError::UnrecordedFormat {
                layer: next,
                depth,
                named_by: cur,
            });
        };
        out.layers.push(Layer {
            path: next.clone(),
            format: Some(f.clone()),
            extras: Vec::new(),
        });
        cur = next;
        fmt_name = f;
    }
}

/// Open an image for reading its header: never blocks (FIFOs), never
/// becomes a controlling terminal, and only regular files and block devices
/// are read.
fn open_image(path: &Path, fmt: ImageFormat) -> Result<File, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_path_buf(),
        format: fmt.name(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let ft = file.metadata().map_err(io)?.file_type();
    let kind = if ft.is_file() || ft.is_block_device() {
        return Ok(file);
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    };
    Err(ImageError::NotAFile {
        path: path.to_path_buf(),
        format: fmt.name(),
        kind,
    })
}

/// Read as much of the file's start as the header needs, within the caps.
fn read_header(file: &File, path: &Path, fmt: ImageFormat) -> Result<Header, ImageError> {
    let limit = if fmt == ImageFormat::Vmdk {
        MAX_DESCRIPTOR_BYTES
    } else {
        MAX_HEADER_BYTES
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut want = FIRST_READ;
    loop {
        let eof = fill(file, &mut buf, want).map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            format: fmt.name(),
            source,
        })?;
        match parse_prefix(fmt, &buf, eof) {
            Err(Need(need)) if !eof => {
                if need > limit as u64 {
                    return Err(ImageError::HeaderTooLarge {
                        path: path.to_path_buf(),
                        format: fmt.name(),
                        need,
                        limit,
                    });
                }
                // grow geometrically, page-aligned, capped
                let n = (need as usize).max(want * 2).min(limit);
                want = n.div_ceil(4096) * 4096;
                want = want.min(limit);
            }
            Err(Need(need)) => {
                return Err(ImageError::Truncated {
                    path: path.to_path_buf(),
                    format: fmt.name(),
                    need,
                    have: buf.len() as u64,
                })
            }
            Err(Fail(e)) => return Err(e.at(path)),
            Ok(h) => return Ok(h),
        }
    }
}

/// Read the file's first `want` bytes into `buf` (which holds a prefix
/// already). Returns whether the file ended before `want`.
fn fill(file: &File, buf: &mut Vec<u8>, want: usize) -> std::io::Result<bool> {
    let mut have = buf.len();
    buf.resize(want, 0);
    while have < want {
        match file.read_at(&mut buf[have..], have as u64) {
            Ok(0) => {
                buf.truncate(have);
                return Ok(true);
            }
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Parse an image header of the given (declared) format from a buffer
/// holding the file's first bytes (or all of it). Pure and bounded: for any
/// input it returns a header or an error, allocating at most what the
/// format's caps allow. This is the fuzzing entry point.
pub fn parse_header(format: ImageFormat, bytes: &[u8]) -> Result<Header, ImageError> {
    match parse_prefix(format, bytes, true) {
        Ok(h) => Ok(h),
        Err(Fail(e)) => Err(e),
        Err(Need(need)) => Err(ImageError::Truncated {
            path: PathBuf::new(),
            format: format.name(),
            need,
            have: bytes.len() as u64,
        }),
    }
}

/// Why a prefix did not parse.
enum Short {
    /// The header needs the file's first N bytes.
    Need(u64),
    /// It is wrong, whatever follows.
    Fail(ImageError),
}
use Short::{Fail, Need};

fn bad(format: ImageFormat, reason: impl Into<String>) -> Short {
    Fail(ImageError::Malformed {
        path: PathBuf::new(),
        format: format.name(),
        reason: reason.into(),
    })
}

/// A bounds-checked view of the file's prefix.
struct Buf<'a> {
    b: &'a [u8],
}

impl Buf<'_> {
    fn get(&self, off: u64, len: u64) -> Result<&[u8], Short> {
        let end = off.checked_add(len).ok_or(Need(u64::MAX))?;
        if end > self.b.len() as u64 {
            return Err(Need(end));
        }
        Ok(&self.b[off as usize..end as usize])
    }
    fn be32(&self, off: u64) -> Result<u32, Short> {
        let s = self.get(off, 4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn be64(&self, off: u64) -> Result<u64, Short> {
        let s = self.get(off, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn le32(&self, off: u64) -> Result<u32, Short> {
        Ok(self.be32(off)?.swap_bytes())
    }
    fn le64(&self, off: u64) -> Result<u64, Short> {
        Ok(self.be64(off)?.swap_bytes())
    }
}

fn parse_prefix(fmt: ImageFormat, bytes: &[u8], eof: bool) -> Result<Header, Short> {
    match fmt {
        ImageFormat::Qcow2 => qcow2(Buf { b: bytes }),
        ImageFormat::Qcow => qcow1(Buf { b: bytes }),
        ImageFormat::Qed => qed(Buf { b: bytes }),
        ImageFormat::Vmdk => vmdk(bytes, eof),
    }
}

/// A stored name: no NUL bytes (QEMU would cut the name there, so it is
/// refused rather than guessed), empty means none.
fn name_bytes(fmt: ImageFormat, what: &str, s: &[u8]) -> Result<Option<Vec<u8>>, Short> {
    if s.contains(&0) {
        return Err(bad(fmt, format!("{what} contains a NUL byte")));
    }
    Ok((!s.is_empty()).then(|| s.to_vec()))
}

fn qcow2(b: Buf<'_>) -> Result<Header, Short> {
    const F: ImageFormat = ImageFormat::Qcow2;
    if b.get(0, 4)? != QCOW_MAGIC {
        return Err(bad(F, "no qcow2 magic (QFI\\xfb): the image is not qcow2 although its format is declared qcow2"));
    }
    let version = b.be32(4)?;
    if version != 2 && version != 3 {
        return Err(bad(F, format!("unsupported qcow2 version {version}")));
    }
    let backing_off = b.be64(8)?;
    let backing_len = b.be32(16)? as u64;
    let cluster_bits = b.be32(20)?;
    if !(9..=21).contains(&cluster_bits) {
        return Err(bad(F, format!("invalid cluster_bits {cluster_bits}")));
    }
    let cluster = 1u64 << cluster_bits;
    let (header_len, incompat) = if version == 3 {
        let incompat = b.be64(72)?;
        let hl = b.be32(100)? as u64;
        if hl < 104 {
            return Err(bad(F, format!("header_length {hl} is below 104")));
        }
        if hl > cluster {
            return Err(bad(
                F,
                format!("header_length {hl} exceeds the cluster size {cluster}"),
            ));
        }
        (hl, incompat)
    } else {
        (72, 0)
    };
    if backing_off > cluster {
        return Err(bad(F, format!("backing file offset {backing_off} lies outside the first cluster ({cluster} bytes)")));
    }
    if backing_off != 0 && backing_len > QCOW2_MAX_BACKING_NAME as u64 {
        return Err(bad(F, format!("backing file name is {backing_len} bytes, over the limit of {QCOW2_MAX_BACKING_NAME}")));
    }
    if backing_off != 0 && backing_len > cluster - backing_off {
        return Err(bad(F, "backing file name runs past the first cluster"));
    }
    // Header extensions: from the end of the header to the backing file
    // name (or the end of the first cluster), ended by type 0.
    let end = if backing_off != 0 {
        backing_off
    } else {
        cluster
    };
    let mut off = header_len;
    let mut backing_format: Option<String> = None;
    let mut data_file: Option<Vec<u8>> = None;
    let mut count = 0usize;
    while off < end {
        count += 1;
        if count > MAX_EXTENSIONS {
            return Err(bad(
                F,
                format!("more than {MAX_EXTENSIONS} header extensions"),
            ));
        }
        if end - off < 8 {
            return Err(bad(
                F,
                format!("header extension at {off} is cut off by the end of the extension area"),
            ));
        }
        let ty = b.be32(off)?;
        let len = b.be32(off + 4)? as u64;
        off += 8;
        if len > end - off {
            return Err(bad(F, format!("header extension 0x{ty:08x} at {} is {len} bytes, past the end of the extension area", off - 8)));
        }
        match ty {
            EXT_END => break,
            EXT_BACKING_FORMAT => {
                if len > MAX_FORMAT_NAME as u64 {
                    return Err(bad(F, format!("backing format name is {len} bytes, over the limit of {MAX_FORMAT_NAME}")));
                }
                let raw = b.get(off, len)?;
                let raw = raw.split(|&c| c == 0).next().unwrap_or_default();
                let s = std::str::from_utf8(raw)
                    .ok()
                    .filter(|s| s.bytes().all(|c| c.is_ascii_graphic()))
                    .ok_or_else(|| {
                        bad(
                            F,
                            format!("backing format name {raw:?} is not a plain name"),
                        )
                    })?;
                backing_format = (!s.is_empty()).then(|| s.to_string());
            }
            EXT_DATA_FILE => {
                if len > MAX_NAME as u64 {
                    return Err(bad(
                        F,
                        format!("data file name is {len} bytes, over the limit of {MAX_NAME}"),
                    ));
                }
                data_file = name_bytes(F, "data file name", b.get(off, len)?)?;
            }
            _ => {}
        }
        off = off.saturating_add(len.div_ceil(8) * 8);
    }
    let backing = if backing_off != 0 && backing_len != 0 {
        name_bytes(F, "backing file name", b.get(backing_off, backing_len)?)?.map(|name| {
            BackingName {
                name,
                format: backing_format,
            }
        })
    } else {
        None
    };
    Ok(Header {
        backing,
        data_file: if incompat & INCOMPAT_DATA_FILE != 0 {
            data_file
        } else {
            None
        },
        extents: Vec::new(),
    })
}

fn qcow1(b: Buf<'_>) -> Result<Header, Short> {
    const F: ImageFormat = ImageFormat::Qcow;
    if b.get(0, 4)? != QCOW_MAGIC {
        return Err(bad(
            F,
            "no qcow magic (QFI\\xfb): the image is not qcow although its format is declared qcow",
        ));
    }
    let version = b.be32(4)?;
    if version != 1 {
        return Err(bad(
            F,
            format!("qcow version {version} is not 1 (is the format really qcow2?)"),
        ));
    }
    let off = b.be64(8)?;
    let len = b.be32(16)? as u64;
    b.get(0, 48)?; // whole v1 header present
    if off == 0 || len == 0 {
        return Ok(Header::default());
    }
    if len > QCOW2_MAX_BACKING_NAME as u64 {
        return Err(bad(
            F,
            format!("backing file name is {len} bytes, over the limit of {QCOW2_MAX_BACKING_NAME}"),
        ));
    }
    if off > MAX_HEADER_BYTES as u64 {
        return Err(Need(off.saturating_add(len)));
    }
    let backing = name_bytes(F, "backing file name", b.get(off, len)?)?.map(|name| BackingName {
        name,
        format: None, // qcow v1 cannot record one
    });
    Ok(Header {
        backing,
        ..Header::default()
    })
}

fn qed(b: Buf<'_>) -> Result<Header, Short> {
    const F: ImageFormat = ImageFormat::Qed;
    if b.get(0, 4)? != QED_MAGIC {
        return Err(bad(
            F,
            "no qed magic (QED\\0): the image is not qed although its format is declared qed",
        ));
    }
    let cluster = b.le32(4)? as u64;
    if !cluster.is_power_of_two() || !(4096..=64 << 20).contains(&cluster) {
        return Err(bad(F, format!("invalid cluster size {cluster}")));
    }
    let header_clusters = b.le32(12)? as u64;
    let features = b.le64(16)?;
    let off = b.le32(56)? as u64;
    let len = b.le32(60)? as u64;
    if features & QED_F_BACKING_FILE == 0 {
        return Ok(Header::default());
    }
    if off.saturating_add(len) > cluster.saturating_mul(header_clusters) {
        return Err(bad(F, "backing file name lies outside the header clusters"));
    }
    if len > MAX_NAME as u64 {
        return Err(bad(
            F,
            format!("backing file name is {len} bytes, over the limit of {MAX_NAME}"),
        ));
    }
    let format = (features & QED_F_BACKING_FORMAT_NO_PROBE != 0).then(|| "raw".to_string());
    let backing = name_bytes(F, "backing file name", b.get(off, len)?)?
        .map(|name| BackingName { name, format });
    Ok(Header {
        backing,
        ..Header::default()
    })
}

/// The text from `off` to the first NUL (or the end of the file).
fn c_string(bytes: &[u8], off: usize, eof: bool) -> Result<&[u8], Short> {
    let tail = bytes.get(off..).unwrap_or_default();
    match tail.iter().position(|&c| c == 0) {
        Some(n) => Ok(&tail[..n]),
        None if eof => Ok(tail),
        None => Err(Need(bytes.len() as u64 + 1)),
    }
}

fn vmdk(bytes: &[u8], eof: bool) -> Result<Header, Short> {
    const F: ImageFormat = ImageFormat::Vmdk;
    let b = Buf { b: bytes };
    let magic = match b.get(0, 4) {
        Ok(m) => m,
        Err(_) if eof => bytes, // a tiny text descriptor
        Err(e) => return Err(e),
    };
    if magic == VMDK4_MAGIC || magic == VMDK3_MAGIC {
        // A sparse extent: QEMU reads the parent hint from the descriptor at
        // 512 bytes, and (VMDK4 with capacity 0 only) opens the extents the
        // embedded descriptor lists.
        let mut h = Header::default();
        if magic == VMDK4_MAGIC {
            let capacity = b.le64(12)?;
            let desc_sectors = b.le64(28)?;
            if capacity == 0 && desc_sectors != 0 {
                let off = desc_sectors
                    .checked_mul(512)
                    .filter(|&o| o < MAX_HEADER_BYTES as u64)
                    .ok_or_else(|| bad(F, format!("descriptor offset {desc_sectors} sectors is past {MAX_HEADER_BYTES} bytes")))?;
                let desc = c_string(bytes, off as usize, eof)?;
                h.extents = vmdk_extents(desc)?;
            }
        }
        let desc = c_string(bytes, VMDK_SPARSE_DESC_OFFSET, eof)?;
        h.backing = vmdk_parent(desc)?;
        return Ok(h);
    }
    // A text descriptor file: the whole file up to the first NUL.
    let desc = c_string(bytes, 0, eof)?;
    if !contains(desc, b"createType") {
        return Err(bad(F, "not a VMDK descriptor (no createType) and no sparse extent magic: the image is not vmdk although its format is declared vmdk"));
    }
    Ok(Header {
        backing: vmdk_parent(desc)?,
        data_file: None,
        extents: vmdk_extents(desc)?,
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `parentFileNameHint="NAME"`, found the way QEMU finds it (first
/// occurrence anywhere in the descriptor). Its format is vmdk, as QEMU
/// records it.
fn vmdk_parent(desc: &[u8]) -> Result<Option<BackingName>, Short> {
    const F: ImageFormat = ImageFormat::Vmdk;
    const KEY: &[u8] = b"parentFileNameHint";
    let Some(at) = find(desc, KEY) else {
        return Ok(None);
    };
    let rest = &desc[at + KEY.len()..];
    let Some(rest) = rest.strip_prefix(b"=\"") else {
        return Err(bad(F, "parentFileNameHint is not followed by =\""));
    };
    let Some(end) = rest.iter().position(|&c| c == b'"') else {
        return Err(bad(F, "parentFileNameHint has no closing quote"));
    };
    if end > MAX_NAME {
        return Err(bad(
            F,
            format!("parent file name is {end} bytes, over the limit of {MAX_NAME}"),
        ));
    }
    Ok(
        name_bytes(F, "parent file name", &rest[..end])?.map(|name| BackingName {
            name,
            format: Some("vmdk".into()),
        }),
    )
}

/// The extent files QEMU opens: lines `RW SECTORS TYPE "NAME" [OFFSET]` with
/// a file-backed type (FLAT, SPARSE, VMFS, VMFSSPARSE, SESPARSE) and a
/// positive size. Other access modes and types are skipped, as QEMU skips
/// them; a malformed line of a file-backed type is an error.
fn vmdk_extents(desc: &[u8]) -> Result<Vec<Vec<u8>>, Short> {
    const F: ImageFormat = ImageFormat::Vmdk;
    let mut out = Vec::new();
    for line in desc.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut rest = line.trim_ascii_start();
        let mut token = || -> &[u8] {
            let n = rest
                .iter()
                .position(|c| c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            let (t, r) = rest.split_at(n);
            rest = r.trim_ascii_start();
            t
        };
        if token() != b"RW" {
            continue;
        }
        let sectors = token();
        let ty = token();
        let Some(quoted) = rest.strip_prefix(b"\"") else {
            continue; // fewer than four fields: QEMU skips the line
        };
        let Some(end) = quoted.iter().position(|&c| c == b'"') else {
            return Err(bad(
                F,
                format!(
                    "extent line {:?} has no closing quote",
                    String::from_utf8_lossy(line)
                ),
            ));
        };
        let name = &quoted[..end];
        let after = quoted[end + 1..].trim_ascii();
        let sectors: i64 = std::str::from_utf8(sectors)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                bad(
                    F,
                    format!(
                        "extent line {:?} has no valid size",
                        String::from_utf8_lossy(line)
                    ),
                )
            })?;
        let has_offset = !after.is_empty();
        let offset_ok = std::str::from_utf8(after)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .is_some_and(|o| o >= 0);
        let file_backed = matches!(
            ty,
            b"FLAT" | b"SPARSE" | b"VMFS" | b"VMFSSPARSE" | b"SESPARSE"
        );
        if file_backed {
            let ok = match ty {
                b"FLAT" => offset_ok,
                _ => !has_offset,
            };
            if !ok {
                return Err(bad(
                    F,
                    format!("invalid extent line {:?}", String::from_utf8_lossy(line)),
                ));
            }
        }
        if sectors <= 0 || !file_backed {
            continue;
        }
        if name.len() > MAX_EXTENT_NAME {
            return Err(bad(
                F,
                format!(
                    "extent file name is {} bytes, over the limit of {MAX_EXTENT_NAME}",
                    name.len()
                ),
            ));
        }
        match name_bytes(F, "extent file name", name)? {
            Some(n) => out.push(n),
            None => return Err(bad(F, "extent line with an empty file name")),
        }
    }
    Ok(out)
}

/// A backing or extent name, resolved.
enum Resolved {
    Local(PathBuf),
    NotLocal(String),
}

/// Resolve a stored name the way QEMU does: a name with a protocol prefix
/// (`nbd://`, `rbd:`, `json:{...}`, anything with a `:` before the first
/// `/`) is not a local file, except `file:/ABSOLUTE`; an absolute name is
/// used as is; a relative name is relative to the directory of the image
/// that stores it.
fn resolve(dir: &Path, name: &[u8]) -> Resolved {
    let proto_end = name.iter().position(|&c| c == b':' || c == b'/');
    if let Some(i) = proto_end.filter(|&i| name[i] == b':') {
        let proto = String::from_utf8_lossy(&name[..i]).into_owned();
        if proto == "file" && name.get(i + 1) == Some(&b'/') {
            return Resolved::Local(PathBuf::from(OsStr::from_bytes(&name[i + 1..])));
        }
        let why = if proto == "json" {
            "a json: pseudo-protocol name; aa-virt does not follow it (describe the chain with <backingStore> in the domain XML)".to_string()
        } else {
            format!("a {proto}: network or protocol name, not a local file")
        };
        return Resolved::NotLocal(why);
    }
    let p = Path::new(OsStr::from_bytes(name));
    if p.is_absolute() {
        Resolved::Local(p.to_path_buf())
    } else {
        Resolved::Local(dir.join(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal qcow2 v3 header with optional backing name, format and
    /// data file.
    fn q2(backing: Option<&[u8]>, fmt: Option<&[u8]>, data: Option<&[u8]>) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(QCOW_MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        let ext = |h: &mut Vec<u8>, ty: u32, d: &[u8]| {
            h.extend_from_slice(&ty.to_be_bytes());
            h.extend_from_slice(&(d.len() as u32).to_be_bytes());
            h.extend_from_slice(d);
            h.resize(h.len().div_ceil(8) * 8, 0);
        };
        if let Some(f) = fmt {
            ext(&mut h, EXT_BACKING_FORMAT, f);
        }
        if let Some(d) = data {
            ext(&mut h, EXT_DATA_FILE, d);
            h[79] |= INCOMPAT_DATA_FILE as u8;
        }
        ext(&mut h, EXT_END, b"");
        if let Some(b) = backing {
            let off = h.len() as u64;
            h[8..16].copy_from_slice(&off.to_be_bytes());
            h[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
            h.extend_from_slice(b);
        }
        h
    }

    #[test]
    fn qcow2_backing_and_format() {
        let h = parse_header(
            ImageFormat::Qcow2,
            &q2(Some(b"base.img"), Some(b"raw"), None),
        )
        .unwrap();
        let b = h.backing.unwrap();
        assert_eq!(b.name, b"base.img");
        assert_eq!(b.format.as_deref(), Some("raw"));
        assert_eq!(h.data_file, None);
    }

    #[test]
    fn qcow2_data_file_only_with_feature_bit() {
        let mut img = q2(None, None, Some(b"data.raw"));
        assert_eq!(
            parse_header(ImageFormat::Qcow2, &img)
                .unwrap()
                .data_file
                .as_deref(),
            Some(&b"data.raw"[..])
        );
        img[79] = 0;
        assert_eq!(
            parse_header(ImageFormat::Qcow2, &img).unwrap().data_file,
            None
        );
    }

    #[test]
    fn qcow2_missing_format_is_none() {
        let h = parse_header(ImageFormat::Qcow2, &q2(Some(b"/x"), None, None)).unwrap();
        assert_eq!(h.backing.unwrap().format, None);
    }

    #[test]
    fn qcow2_hostile_lengths() {
        // (byte range patched, new value, expected message)
        let cases: [(std::ops::Range<usize>, Vec<u8>, &str); 3] = [
            (
                16..20,
                5000u32.to_be_bytes().to_vec(),
                "over the limit of 1023",
            ),
            (
                8..16,
                u64::MAX.to_be_bytes().to_vec(),
                "outside the first cluster",
            ),
            (
                108..112,
                u32::MAX.to_be_bytes().to_vec(),
                "past the end of the extension area",
            ),
        ];
        for (range, value, want) in cases {
            let mut img = q2(Some(b"base"), Some(b"qcow2"), None);
            img[range].copy_from_slice(&value);
            let e = parse_header(ImageFormat::Qcow2, &img)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        // name beyond the buffer: truncated, with the sizes
        let img = q2(Some(b"base-name"), Some(b"qcow2"), None);
        let e = parse_header(ImageFormat::Qcow2, &img[..img.len() - 3]).unwrap_err();
        assert!(matches!(e, ImageError::Truncated { .. }), "{e}");
        // every prefix of a valid header is an error, never a panic
        for n in 0..img.len() {
            assert!(parse_header(ImageFormat::Qcow2, &img[..n]).is_err());
        }
        // NUL inside the name
        let img = q2(Some(b"ba\0se"), Some(b"qcow2"), None);
        assert!(parse_header(ImageFormat::Qcow2, &img).is_err());
    }

    #[test]
    fn wrong_magic_for_declared_format() {
        let e = parse_header(
            ImageFormat::Qcow2,
            b"QED\0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        );
        assert!(e.unwrap_err().to_string().contains("not qcow2"));
        let img = q2(None, None, None);
        assert!(parse_header(ImageFormat::Qed, &img).is_err());
        assert!(parse_header(ImageFormat::Vmdk, &img).is_err());
    }

    #[test]
    fn qed_flags() {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(QED_MAGIC);
        h[4..8].copy_from_slice(&65536u32.to_le_bytes());
        h[12..16].copy_from_slice(&1u32.to_le_bytes());
        h[16] = (QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE) as u8;
        h[56..60].copy_from_slice(&64u32.to_le_bytes());
        h[60..64].copy_from_slice(&4u32.to_le_bytes());
        h.extend_from_slice(b"base");
        let b = parse_header(ImageFormat::Qed, &h).unwrap().backing.unwrap();
        assert_eq!(
            (b.name.as_slice(), b.format.as_deref()),
            (&b"base"[..], Some("raw"))
        );
        h[16] = QED_F_BACKING_FILE as u8;
        assert_eq!(
            parse_header(ImageFormat::Qed, &h)
                .unwrap()
                .backing
                .unwrap()
                .format,
            None
        );
        h[16] = 0;
        assert_eq!(parse_header(ImageFormat::Qed, &h).unwrap().backing, None);
    }

    #[test]
    fn vmdk_descriptor() {
        let d = b"# Disk DescriptorFile\nversion=1\ncreateType=\"twoGbMaxExtentFlat\"\nparentFileNameHint=\"../p.vmdk\"\n\
RW 2048 FLAT \"x-f001.vmdk\" 0\r\nRDONLY 2048 FLAT \"ro.vmdk\" 0\nRW 2048 ZERO\nRW 10 SPARSE \"s.vmdk\"\n# RW 1 FLAT \"c.vmdk\" 0\n";
        let h = parse_header(ImageFormat::Vmdk, d).unwrap();
        assert_eq!(h.extents, vec![b"x-f001.vmdk".to_vec(), b"s.vmdk".to_vec()]);
        let b = h.backing.unwrap();
        assert_eq!(b.name, b"../p.vmdk");
        assert_eq!(b.format.as_deref(), Some("vmdk"));
        assert!(parse_header(ImageFormat::Vmdk, b"createType=\"x\"\nRW 5 FLAT \"a\"\n").is_err());
        assert!(parse_header(ImageFormat::Vmdk, b"just some raw bytes").is_err());
    }

    #[test]
    fn protocol_names() {
        let d = Path::new("/i");
        for n in [
            "nbd://h:1/x",
            "rbd:pool/img",
            "json:{\"file\":{}}",
            "gluster+tcp://h/v",
        ] {
            assert!(
                matches!(resolve(d, n.as_bytes()), Resolved::NotLocal(_)),
                "{n}"
            );
        }
        assert!(matches!(resolve(d, b"file:/a/b"), Resolved::Local(p) if p == Path::new("/a/b")));
        assert!(
            matches!(resolve(d, b"sub/a:b"), Resolved::Local(p) if p == Path::new("/i/sub/a:b"))
        );
        assert!(matches!(resolve(d, b"/abs"), Resolved::Local(p) if p == Path::new("/abs")));
    }

    #[test]
    fn declared_formats() {
        assert_eq!(declared("qcow2"), Declared::Reads(ImageFormat::Qcow2));
        assert_eq!(declared("raw"), Declared::NoBacking);
        assert_eq!(declared("bogus"), Declared::Unknown);
    }
}
