//! qcow2 and qcow (v1) headers: the backing file name, its recorded
//! format (a header extension), and the external data file.

use super::header::{
    bad, name_bytes, Buf,
    Short::{self, Need},
};
use super::{BackingName, Header, ImageFormat, MAX_HEADER_BYTES, MAX_NAME, QCOW2_MAX_BACKING_NAME};

const MAX_FORMAT_NAME: usize = 15;

/// Most header extensions walked in one qcow2 header.
const MAX_EXTENSIONS: usize = 1024;

const QCOW_MAGIC: &[u8; 4] = b"QFI\xfb";
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
const EXT_DATA_FILE: u32 = 0x4441_5441;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;

pub(super) fn qcow2(b: Buf<'_>) -> Result<Header, Short> {
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

pub(super) fn qcow1(b: Buf<'_>) -> Result<Header, Short> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::libvirt::image::{parse_header, ImageError};

    /// A minimal qcow2 v3 header with optional backing name, format and
    /// data file.
    pub(crate) fn q2(backing: Option<&[u8]>, fmt: Option<&[u8]>, data: Option<&[u8]>) -> Vec<u8> {
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
}
