//! Profile and namespace names for a container.
//!
//! Scheme (readable form): profile `lxc-<ct>_<<lxcpath>>-aa-virt`, policy
//! namespace the same with every `/` of the path made `-`, for example
//! `lxc-c1_</var/lib/lxc>-aa-virt` and `lxc-c1_<-var-lib-lxc>-aa-virt`.
//!
//! - Both start with `lxc-`: the stock `lxc-start` AppArmor profile only
//!   allows `change_profile` to `lxc-*`, and distributions' in-guest
//!   `apparmor.service` only loads policy inside namespaces named `lxc-`,
//!   `lxd-` or `incus-`.
//! - They can never equal a name LXC generates itself
//!   (`lxc.apparmor.profile = generated`): LXC's names end in `>` (or are 16
//!   hex digits with no prefix), ours end in `-aa-virt` — a prefix such as
//!   `lxc-aa-virt-<ct>` would collide with LXC's name for a container
//!   called `aa-virt-<ct>`.
//! - The readable form is used only when it is one-to-one: the container
//!   name holds only `[A-Za-z0-9._-]`, the (canonical) lxcpath only
//!   `[A-Za-z0-9._/]` (no `-`, so turning `/` into `-` loses nothing; no
//!   `<`, `>`, so the separators are unambiguous), and the profile name is
//!   at most [`MAX_NAME_LEN`] bytes. Anything else gets the hashed form
//!   `lxc-aa-virt-<sha256(ct NUL lxcpath) in hex>` for both, which has no
//!   `<` and so cannot equal a readable name either.
//! - Namespace names never contain `/` or `:`.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::apparmor::ContainerMode;

/// The prefix every name starts with.
pub const PREFIX: &str = "lxc-";
/// The suffix of readable names.
pub const SUFFIX: &str = "-aa-virt";
/// The prefix of hashed names.
pub const HASHED_PREFIX: &str = "lxc-aa-virt-";
/// Longest readable name: securityfs names a loaded profile's directory
/// `<name>.<n>` and a namespace directory `<name>`, and NAME_MAX is 255;
/// this leaves room for the counter.
pub const MAX_NAME_LEN: usize = 246;

/// A container's AppArmor names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The profile, loaded in the host's (root) namespace.
    pub profile: String,
    /// The container's policy namespace.
    pub namespace: String,
    /// True when the names are the hashed form.
    pub hashed: bool,
}

fn plain_name(ct: &str) -> bool {
    !ct.is_empty()
        && ct
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn plain_path(p: &[u8]) -> bool {
    p.first() == Some(&b'/')
        && p.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"._/".contains(&b))
}

impl Names {
    /// The names for container `ct` in `lxcpath` (which the caller has made
    /// canonical, so that every spelling of one directory gives one name).
    pub fn derive(ct: &str, lxcpath: &Path) -> Names {
        let p = lxcpath.as_os_str().as_bytes();
        if plain_name(ct) && plain_path(p) {
            // Checked above: ASCII only.
            let path = String::from_utf8_lossy(p);
            let profile = format!("{PREFIX}{ct}_<{path}>{SUFFIX}");
            if profile.len() <= MAX_NAME_LEN {
                let namespace = format!("{PREFIX}{ct}_<{}>{SUFFIX}", path.replace('/', "-"));
                return Names {
                    profile,
                    namespace,
                    hashed: false,
                };
            }
        }
        let mut h = Sha256::new();
        h.update(ct.as_bytes());
        h.update([0u8]);
        h.update(p);
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("{HASHED_PREFIX}{hex}");
        Names {
            profile: name.clone(),
            namespace: name,
            hashed: true,
        }
    }

    /// The label LXC writes for init: `PROFILE//&:NAMESPACE:` (stacked; the
    /// empty name after the namespace is its `unconfined`), or just
    /// `PROFILE` on a host that is itself a stacked container.
    pub fn label(&self, mode: ContainerMode) -> String {
        match mode {
            ContainerMode::Stacked => format!("{}//&:{}:", self.profile, self.namespace),
            ContainerMode::Plain => self.profile.clone(),
        }
    }

    /// The label text the kernel reports for init once it runs under
    /// [`Names::label`], in every spelling the kernel uses, with the mode.
    pub fn expected_current(&self, mode: ContainerMode) -> Vec<String> {
        match mode {
            ContainerMode::Stacked => vec![
                format!(
                    "{}//&:{}:unconfined (enforce)",
                    self.profile, self.namespace
                ),
                format!(
                    "{}//&:{}://unconfined (enforce)",
                    self.profile, self.namespace
                ),
            ],
            ContainerMode::Plain => vec![format!("{} (enforce)", self.profile)],
        }
    }

    /// Which mode a configured label is in, if it is one of ours.
    pub fn mode_of(&self, label: &str) -> Option<ContainerMode> {
        if label == self.label(ContainerMode::Stacked) {
            Some(ContainerMode::Stacked)
        } else if label == self.label(ContainerMode::Plain) {
            Some(ContainerMode::Plain)
        } else {
            None
        }
    }

    /// The profile source file's name: the namespace name, which has no `/`.
    pub fn file_name(&self) -> &str {
        &self.namespace
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::securityfs::check_namespace;

    #[test]
    fn readable_names() {
        let n = Names::derive("c1", Path::new("/var/lib/lxc"));
        assert_eq!(n.profile, "lxc-c1_</var/lib/lxc>-aa-virt");
        assert_eq!(n.namespace, "lxc-c1_<-var-lib-lxc>-aa-virt");
        assert!(!n.hashed);
        assert_eq!(
            n.label(ContainerMode::Stacked),
            "lxc-c1_</var/lib/lxc>-aa-virt//&:lxc-c1_<-var-lib-lxc>-aa-virt:"
        );
        assert_eq!(
            n.label(ContainerMode::Plain),
            "lxc-c1_</var/lib/lxc>-aa-virt"
        );
        assert_eq!(
            n.expected_current(ContainerMode::Stacked)[0],
            "lxc-c1_</var/lib/lxc>-aa-virt//&:lxc-c1_<-var-lib-lxc>-aa-virt:unconfined (enforce)"
        );
        assert_eq!(
            n.mode_of(&n.label(ContainerMode::Plain)),
            Some(ContainerMode::Plain)
        );
        assert_eq!(n.mode_of("generated"), None);
        check_namespace(&n.namespace).unwrap();
    }

    #[test]
    fn never_an_lxc_generated_name() {
        // LXC's own name for container "aa-virt-c1" in /var/lib/lxc.
        let lxcs = "lxc-aa-virt-c1_</var/lib/lxc>";
        for (ct, p) in [("c1", "/var/lib/lxc"), ("aa-virt-c1", "/var/lib/lxc")] {
            let n = Names::derive(ct, Path::new(p));
            assert_ne!(n.profile, lxcs);
            assert!(n.profile.ends_with(SUFFIX) && !n.profile.ends_with('>'));
        }
    }

    #[test]
    fn ambiguous_or_long_inputs_are_hashed_with_the_prefix() {
        for (ct, p) in [
            ("c1", "/srv/lxc-containers"), // '-' in the path
            ("a b", "/var/lib/lxc"),       // space in the name
            ("c<1>", "/var/lib/lxc"),      // separators in the name
            ("c:1", "/var/lib/lxc"),       // ':' in the name
        ] {
            let n = Names::derive(ct, Path::new(p));
            assert!(n.hashed, "{ct} {p}");
            assert!(n.profile.starts_with("lxc-aa-virt-"));
            assert_eq!(n.profile.len(), HASHED_PREFIX.len() + 64);
            check_namespace(&n.namespace).unwrap();
        }
        let long = "x".repeat(240);
        let n = Names::derive(&long, Path::new("/var/lib/lxc"));
        assert!(n.hashed && n.profile.starts_with(PREFIX));
        // Paths that the readable form would confuse get different hashes.
        let a = Names::derive("c1", Path::new("/srv/a-b"));
        let b = Names::derive("c1", Path::new("/srv/a/b"));
        assert_ne!(a.namespace, b.namespace);
        assert_ne!(
            Names::derive("a", Path::new("/x")),
            Names::derive("b", Path::new("/x"))
        );
    }
}
