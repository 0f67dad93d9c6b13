//! Kernel feature sets (an ABI) as the parser sees them, read from a
//! features file (`apparmor_parser --features-file`, the `{key {value}}`
//! text Debian ships in `/usr/share/apparmor-features/`) or from a
//! kernel's feature directory (`/sys/kernel/security/apparmor/features`),
//! and what a new one would start to mediate that an old one does not.

use std::collections::BTreeSet;
use std::path::Path;

/// Rule classes a kernel mediates only when its feature set says so, with
/// the feature paths that turn each on and the rule keyword that grants
/// it. A profile without a rule of a newly mediated class is denied what
/// that class covers once the new kernel enforces it.
pub const MEDIATION: &[(&str, &[&str], &str)] = &[
    (
        "userns",
        // Ubuntu's kernels have a file for it; upstream's (Debian 13's
        // 6.12) list it in namespaces/mask.
        &[
            "namespaces/userns_create",
            "namespaces/mask/userns_create",
            "userns",
        ],
        "userns",
    ),
    ("io_uring", &["io_uring"], "io_uring"),
    ("mqueue", &["ipc/posix_mqueue", "mqueue"], "mqueue"),
    ("unix", &["network/af_unix", "unix"], "unix"),
    ("dbus", &["dbus"], "dbus"),
    ("signal", &["signal"], "signal"),
    ("ptrace", &["ptrace"], "ptrace"),
    ("mount", &["mount"], "mount"),
    ("pivot_root", &["namespaces/pivot_root"], "pivot_root"),
    (
        "network",
        &["network", "network_v8", "network_v9"],
        "network",
    ),
];

/// A feature set: every key path (`domain/stack`, `network/af_unix`,
/// `userns`) of the tree, to two levels, plus each word of a second-level
/// `mask` as a third (`namespaces/mask/userns_create`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Abi {
    /// The key paths.
    pub keys: BTreeSet<String>,
}

impl Abi {
    /// Read a features file, or a kernel feature directory.
    pub fn read(path: &Path) -> std::io::Result<Abi> {
        if path.is_dir() {
            let mut keys = BTreeSet::new();
            walk(path, "", 0, &mut keys)?;
            Ok(Abi { keys })
        } else {
            Ok(Abi::parse(&std::fs::read_to_string(path)?))
        }
    }

    /// Parse the features-file text (with
    /// [`super::feature_set::parse_features_file`]), keeping each leaf's
    /// first two path components.
    pub fn parse(text: &str) -> Abi {
        let mut keys = BTreeSet::new();
        for (leaf, value) in super::feature_set::parse_features_file(text) {
            let mut parts = leaf.split('/');
            if let Some(a) = parts.next() {
                keys.insert(a.to_string());
                if let Some(b) = parts.next() {
                    keys.insert(format!("{a}/{b}"));
                    if b == "mask" && parts.next().is_none() {
                        mask_words(&format!("{a}/{b}/"), &value, &mut keys);
                    }
                }
            }
        }
        Abi { keys }
    }

    /// Does this feature set turn on mediation class `class` of
    /// [`MEDIATION`]?
    pub fn mediates(&self, class: &str) -> bool {
        MEDIATION
            .iter()
            .filter(|(c, _, _)| *c == class)
            .flat_map(|(_, paths, _)| paths.iter())
            .any(|p| self.keys.contains(*p))
    }

    /// The classes of [`MEDIATION`] that `self` mediates and `old` does not.
    pub fn newly_mediated(&self, old: &Abi) -> Vec<&'static str> {
        MEDIATION
            .iter()
            .map(|(c, _, _)| *c)
            .filter(|c| self.mediates(c) && !old.mediates(c))
            .collect()
    }
}

fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    keys: &mut BTreeSet<String>,
) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let key = format!("{prefix}{name}");
        keys.insert(key.clone());
        if depth == 0 && e.file_type()?.is_dir() {
            walk(&e.path(), &format!("{key}/"), 1, keys)?;
        } else if depth == 1 && name == "mask" && e.file_type()?.is_file() {
            mask_words(
                &format!("{key}/"),
                &std::fs::read_to_string(e.path())?,
                keys,
            );
        }
    }
    Ok(())
}

fn mask_words(prefix: &str, value: &str, keys: &mut BTreeSet<String>) {
    for w in value.split_whitespace() {
        keys.insert(format!("{prefix}{w}"));
    }
}

/// The rules of preprocessed policy `text` (every include expanded) that
/// belong to mediation class `class`: lines whose keyword, after any
/// `audit`, `deny`, `allow`, `owner` or `quiet` qualifiers, is the class's.
pub fn rules_of<'a>(text: &'a str, class: &str) -> Vec<&'a str> {
    let Some((_, _, keyword)) = MEDIATION.iter().find(|(c, _, _)| *c == class) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|l| {
            let mut words = l
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|w| !w.is_empty())
                .skip_while(|w| matches!(*w, "audit" | "deny" | "allow" | "owner" | "quiet"));
            words.next() == Some(keyword)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "caps {mask {chown\n}\n}\nnetwork_v8 {af_mask {unix inet\n}\n}\nsignal {mask {hup\n}\n}\nnamespaces {pivot_root {no\n}\nprofile {yes\n}\n}\n";

    #[test]
    fn reads_the_file_format_and_finds_new_classes() {
        let old = Abi::parse(OLD);
        assert!(old.keys.contains("network_v8/af_mask"));
        assert!(old.keys.contains("namespaces/pivot_root"));
        assert!(
            !old.keys.contains("network_v8/af_mask/unix"),
            "two levels only"
        );
        assert!(old.mediates("signal") && old.mediates("network"));
        let new = Abi::parse(&format!(
            "{OLD}userns {{create {{yes\n}}\n}}\nio_uring {{mask {{sqpoll override_creds\n}}\n}}\nunix {{version {{1.2\n}}\n}}\n"
        ));
        assert_eq!(new.newly_mediated(&old), ["userns", "io_uring", "unix"]);
        assert!(old.newly_mediated(&new).is_empty());
    }

    #[test]
    fn reads_a_kernel_feature_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("namespaces")).unwrap();
        std::fs::write(d.path().join("namespaces/userns_create"), "pciu&\n").unwrap();
        std::fs::create_dir_all(d.path().join("network/af_unix")).unwrap();
        let a = Abi::read(d.path()).unwrap();
        assert!(a.mediates("userns") && a.mediates("unix") && a.mediates("network"));
        assert!(!a.mediates("io_uring"));
    }

    #[test]
    fn upstream_kernels_list_userns_in_the_namespaces_mask() {
        // Debian 13's kernel (6.12) as captured in the VM, and the same
        // layout as a securityfs directory.
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/canary");
        let d13 = Abi::read(&fixture.join("features-debian13-kernel")).unwrap();
        let d12 = Abi::read(&fixture.join("features-debian12")).unwrap();
        assert!(d13.keys.contains("namespaces/mask/userns_create"));
        assert_eq!(d13.newly_mediated(&d12), ["userns", "io_uring"]);
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("namespaces")).unwrap();
        std::fs::write(d.path().join("namespaces/mask"), "userns_create\n").unwrap();
        assert!(Abi::read(d.path()).unwrap().mediates("userns"));
        std::fs::write(d.path().join("namespaces/mask"), "\n").unwrap();
        assert!(!Abi::read(d.path()).unwrap().mediates("userns"));
    }

    #[test]
    fn finds_rules_of_a_class() {
        let text = "profile p {\n  unix (send) type=stream,\n  audit deny userns,\n  /unix r,\n  network unix,\n  signal,\n}\n";
        assert_eq!(rules_of(text, "unix"), ["unix (send) type=stream,"]);
        assert_eq!(rules_of(text, "userns"), ["audit deny userns,"]);
        assert_eq!(rules_of(text, "network"), ["network unix,"]);
        assert!(rules_of(text, "io_uring").is_empty());
    }
}
