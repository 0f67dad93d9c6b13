//! Walking a backing chain on disk: open each layer safely, read its
//! header within the caps, resolve the names it stores, stop on loops and
//! at the depth limit.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::header::{
    parse_prefix,
    Short::{Fail, Need},
};
use super::{
    declared, Chain, Declared, Extra, ExtraKind, Header, ImageError, ImageFormat, Layer, NotLocal,
    FIRST_READ, MAX_CHAIN_DEPTH, MAX_DESCRIPTOR_BYTES, MAX_HEADER_BYTES,
};

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
}
