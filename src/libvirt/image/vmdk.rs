//! VMDK: sparse extents (VMDK4/VMDK3 magic, with an embedded descriptor)
//! and text descriptor files: the parent hint and the extent files.

use super::header::{bad, c_string, name_bytes, Buf, Short};
use super::{BackingName, Header, ImageFormat, MAX_HEADER_BYTES, MAX_NAME};

/// Longest VMDK extent file name (QEMU reads at most 511 bytes).
const MAX_EXTENT_NAME: usize = 511;

const VMDK4_MAGIC: &[u8; 4] = b"KDMV";
const VMDK3_MAGIC: &[u8; 4] = b"COWD";
/// QEMU looks for a sparse VMDK's parent hint in the descriptor here.
const VMDK_SPARSE_DESC_OFFSET: usize = 0x200;

pub(super) fn vmdk(bytes: &[u8], eof: bool) -> Result<Header, Short> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libvirt::image::parse_header;

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
}
