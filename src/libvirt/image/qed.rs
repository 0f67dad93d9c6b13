//! qed headers: the backing file name, and whether its format is pinned
//! to raw (no probing).

use super::header::{bad, name_bytes, Buf, Short};
use super::{BackingName, Header, ImageFormat, MAX_NAME};

const QED_MAGIC: &[u8; 4] = b"QED\0";
const QED_F_BACKING_FILE: u64 = 0x01;
const QED_F_BACKING_FORMAT_NO_PROBE: u64 = 0x04;

pub(super) fn qed(b: Buf<'_>) -> Result<Header, Short> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libvirt::image::parse_header;

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
}
