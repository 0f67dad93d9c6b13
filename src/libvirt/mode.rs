//! A libvirt guest's persistent mode (`aa-virt mode GUEST complain|enforce`).
//!
//! The mode is stored with the guest's state ([`crate::policy::allow`]) and
//! wins over the configuration's `complain` list. AppArmor takes it from the
//! `flags=(...)` of the profile line, which sits in the profile file aa-virt
//! creates once and then leaves to the admin; so, as `aa-complain` does,
//! only the `complain` flag of that one line is changed, under the guest's
//! lock, and only when it differs.

use std::path::PathBuf;

use super::profile::Layout;
use crate::guest::Guest;
use crate::policy::allow::{self, AllowError};
use crate::store::{self, StoreError};

/// Mode of profile files.
const FILE_MODE: u32 = 0o644;

/// Why the mode could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    /// The guest's state cannot be read.
    #[error(transparent)]
    State(#[from] AllowError),
    /// The profile file cannot be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The profile file has no `profile NAME ... {` line to set flags on.
    #[error("cannot set the mode: {file} has no `profile {profile}` line (edited by hand?)")]
    NoProfileLine {
        /// The file.
        file: PathBuf,
        /// The profile.
        profile: String,
    },
}

/// The stored mode of a guest: `Some(true)` complain, `Some(false)`
/// enforce, `None` when never set (the configuration decides).
pub fn stored(layout: &Layout, guest: &Guest) -> Result<Option<bool>, ModeError> {
    let Some(u) = guest.uuid else { return Ok(None) };
    Ok(allow::mode(
        &layout.allow_dir,
        &u.hyphenated().to_string(),
        &guest.name,
    )?)
}

/// `text` with the `complain` flag of profile `profile`'s line set or
/// cleared; `None` when there is no such line.
pub fn set_flag(text: &str, profile: &str, complain: bool) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut found = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let head = t
            .strip_prefix("profile ")
            .map(|r| r.trim_start().trim_start_matches('"'))
            .filter(|r| {
                r.strip_prefix(profile)
                    .is_some_and(|rest| rest.starts_with([' ', '"', '{']))
            });
        if found || head.is_none() || !t.trim_end().ends_with('{') {
            out.push_str(line);
            continue;
        }
        found = true;
        let indent = &line[..line.len() - t.len()];
        let body = t.trim_end().trim_end_matches('{').trim_end();
        let (name, flags) = match body.find(" flags=(") {
            Some(i) => {
                let inner = body[i + 8..].trim_end_matches(')');
                let flags: Vec<&str> = inner
                    .split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty() && *f != "complain" && *f != "enforce")
                    .collect();
                (&body[..i], flags)
            }
            None => (body, Vec::new()),
        };
        let mut flags = flags;
        if complain {
            flags.push("complain");
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" flags=({})", flags.join(","))
        };
        let nl = if line.ends_with('\n') { "\n" } else { "" };
        out.push_str(&format!("{indent}{name}{flags} {{{nl}"));
    }
    found.then_some(out)
}

/// Set the `complain` flag in the installed profile file of `profile`
/// (under the guest's lock); true when the file changed. A missing file
/// is left alone: the next render creates it with the mode.
pub fn apply(layout: &Layout, profile: &str, complain: bool) -> Result<bool, ModeError> {
    let path = layout.profile_path(profile);
    let _lock = store::lock(&layout.lock_dir, profile)?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(StoreError::Io {
                op: "read",
                path,
                source,
            }
            .into())
        }
    };
    let new = set_flag(&text, profile, complain).ok_or_else(|| ModeError::NoProfileLine {
        file: path.clone(),
        profile: profile.into(),
    })?;
    Ok(store::write_if_changed(&path, new.as_bytes(), FILE_MODE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_set_and_cleared() {
        let p = "libvirt-x";
        let text = "# c\nprofile libvirt-x flags=(attach_disconnected) {\n  #include <a>\n}\n";
        let on = set_flag(text, p, true).unwrap();
        assert!(
            on.contains("profile libvirt-x flags=(attach_disconnected,complain) {\n"),
            "{on}"
        );
        assert_eq!(set_flag(&on, p, true).unwrap(), on);
        assert_eq!(set_flag(&on, p, false).unwrap(), text);
        let bare = "profile libvirt-x {\n}\n";
        assert_eq!(
            set_flag(bare, p, true).unwrap(),
            "profile libvirt-x flags=(complain) {\n}\n"
        );
        assert_eq!(set_flag(bare, p, false).unwrap(), bare);
        // Another profile's line, or none, is not touched.
        assert!(set_flag("profile libvirt-xy {\n}\n", p, true).is_none());
    }

    #[test]
    fn apply_rewrites_the_installed_file_only_when_needed() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::under(d.path());
        assert!(!apply(&layout, "libvirt-x", true).unwrap());
        std::fs::create_dir_all(layout.libvirt_dir()).unwrap();
        let f = layout.profile_path("libvirt-x");
        std::fs::write(&f, "profile libvirt-x flags=(attach_disconnected) {\n}\n").unwrap();
        assert!(apply(&layout, "libvirt-x", true).unwrap());
        assert!(!apply(&layout, "libvirt-x", true).unwrap());
        assert!(std::fs::read_to_string(&f).unwrap().contains(",complain)"));
        std::fs::write(&f, "# gone\n").unwrap();
        assert!(matches!(
            apply(&layout, "libvirt-x", false),
            Err(ModeError::NoProfileLine { .. })
        ));
    }
}
