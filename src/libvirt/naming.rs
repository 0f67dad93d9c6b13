//! The names aa-virt gives a libvirt guest's policy: profile
//! `libvirt-<uuid>` (libvirt's AppArmor driver asks the helper for exactly
//! this name, and labels the QEMU process with it), its admin-editable
//! profile file of the same name and its generated `<profile>.files`.
//!
//! The UUID is always written lower-case and hyphenated, and only that
//! spelling reads back: `libvirt-6695EB01-…` or an unhyphenated UUID is not
//! a profile aa-virt wrote.

use uuid::Uuid;

/// What every libvirt guest's profile name starts with.
pub const PREFIX: &str = "libvirt-";

/// Suffix of the generated rules file beside a profile file.
pub const FILES_SUFFIX: &str = ".files";

/// The profile of the domain with this UUID: `libvirt-<uuid>`.
pub fn profile_name(uuid: &Uuid) -> String {
    format!("{PREFIX}{}", uuid.hyphenated())
}

/// The domain UUID of a profile name aa-virt writes (`libvirt-` and a
/// lower-case hyphenated UUID); `None` for any other name.
pub fn parse_profile_name(name: &str) -> Option<Uuid> {
    let u = name.strip_prefix(PREFIX)?;
    let parsed = Uuid::try_parse(u).ok()?;
    (parsed.hyphenated().to_string() == u).then_some(parsed)
}

/// The file name of a profile's generated rules: `<profile>.files`.
pub fn files_name(profile: &str) -> String {
    format!("{profile}{FILES_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

    #[test]
    fn round_trip_and_only_the_written_spelling() {
        let u: Uuid = U.parse().unwrap();
        let name = profile_name(&u);
        assert_eq!(name, format!("libvirt-{U}"));
        assert_eq!(parse_profile_name(&name), Some(u));
        assert_eq!(files_name(&name), format!("libvirt-{U}.files"));
        for other in [
            format!("libvirt-{}", U.to_uppercase()),
            format!("libvirt-{}", U.replace('-', "")),
            format!("libvirt-{U}.files"),
            U.to_string(),
            "libvirt-x".into(),
        ] {
            assert_eq!(parse_profile_name(&other), None, "{other}");
        }
    }
}
