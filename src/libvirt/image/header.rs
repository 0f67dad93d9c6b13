//! What every format parser shares: a bounds-checked view of the file's
//! prefix that asks for more bytes instead of failing, and the checks on
//! stored names.

use std::path::PathBuf;

use super::qcow2::{qcow1, qcow2};
use super::qed::qed;
use super::vmdk::vmdk;
use super::{Header, ImageError, ImageFormat};

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
pub(super) enum Short {
    /// The header needs the file's first N bytes.
    Need(u64),
    /// It is wrong, whatever follows.
    Fail(ImageError),
}
use Short::{Fail, Need};

pub(super) fn bad(format: ImageFormat, reason: impl Into<String>) -> Short {
    Fail(ImageError::Malformed {
        path: PathBuf::new(),
        format: format.name(),
        reason: reason.into(),
    })
}

/// A bounds-checked view of the file's prefix.
pub(super) struct Buf<'a> {
    pub(super) b: &'a [u8],
}

impl Buf<'_> {
    pub(super) fn get(&self, off: u64, len: u64) -> Result<&[u8], Short> {
        let end = off.checked_add(len).ok_or(Need(u64::MAX))?;
        if end > self.b.len() as u64 {
            return Err(Need(end));
        }
        Ok(&self.b[off as usize..end as usize])
    }
    pub(super) fn be32(&self, off: u64) -> Result<u32, Short> {
        let s = self.get(off, 4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub(super) fn be64(&self, off: u64) -> Result<u64, Short> {
        let s = self.get(off, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    pub(super) fn le32(&self, off: u64) -> Result<u32, Short> {
        Ok(self.be32(off)?.swap_bytes())
    }
    pub(super) fn le64(&self, off: u64) -> Result<u64, Short> {
        Ok(self.be64(off)?.swap_bytes())
    }
}

pub(super) fn parse_prefix(fmt: ImageFormat, bytes: &[u8], eof: bool) -> Result<Header, Short> {
    match fmt {
        ImageFormat::Qcow2 => qcow2(Buf { b: bytes }),
        ImageFormat::Qcow => qcow1(Buf { b: bytes }),
        ImageFormat::Qed => qed(Buf { b: bytes }),
        ImageFormat::Vmdk => vmdk(bytes, eof),
    }
}

/// A stored name: no NUL bytes (QEMU would cut the name there, so it is
/// refused rather than guessed), empty means none.
pub(super) fn name_bytes(fmt: ImageFormat, what: &str, s: &[u8]) -> Result<Option<Vec<u8>>, Short> {
    if s.contains(&0) {
        return Err(bad(fmt, format!("{what} contains a NUL byte")));
    }
    Ok((!s.is_empty()).then(|| s.to_vec()))
}

/// The text from `off` to the first NUL (or the end of the file).
pub(super) fn c_string(bytes: &[u8], off: usize, eof: bool) -> Result<&[u8], Short> {
    let tail = bytes.get(off..).unwrap_or_default();
    match tail.iter().position(|&c| c == 0) {
        Some(n) => Ok(&tail[..n]),
        None if eof => Ok(tail),
        None => Err(Need(bytes.len() as u64 + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libvirt::image::qcow2::tests::q2;

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
}
