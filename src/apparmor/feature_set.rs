//! AppArmor's feature tree, read from the kernel (`features/` in
//! securityfs) or from a features file (`apparmor_parser -M FILE`: the
//! same tree flattened to `name {value}` text, as Debian ships in
//! `/usr/share/apparmor-features/features` for hosts whose kernel has no
//! AppArmor), and what it says about AppArmor 4's mediation classes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::securityfs::Root;

/// Where the features were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<'a> {
    /// The kernel's tree below this securityfs root.
    Kernel(&'a Root),
    /// A features file's parsed entries (see [`parse_features_file`]).
    File(&'a BTreeMap<String, String>),
}

impl Source<'_> {
    /// The value of `rel` (`namespaces/mask`), trimmed; `None` when absent.
    /// A directory reads as an empty value.
    pub fn get(&self, rel: &str) -> Option<String> {
        match self {
            Source::Kernel(root) => root
                .feature(rel)
                .or_else(|| root.has_feature(rel).then(String::new)),
            Source::File(map) => map.get(rel).cloned().or_else(|| {
                let dir = format!("{rel}/");
                map.keys().any(|k| k.starts_with(&dir)).then(String::new)
            }),
        }
    }

    /// True when `rel` exists and, as a list of words, holds `word`.
    fn lists(&self, rel: &str, word: &str) -> bool {
        self.get(rel)
            .is_some_and(|v| v.split_whitespace().any(|w| w == word))
    }
}

/// Parse a features file: `name {value}` nested to any depth, into
/// `path/to/leaf -> value` (values trimmed). Unbalanced braces end the
/// parse; what was read so far is kept.
pub fn parse_features_file(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut stack: Vec<String> = Vec::new();
    let mut buf = String::new();
    for c in text.chars() {
        match c {
            '{' => {
                let key = buf.split_whitespace().last().unwrap_or("");
                stack.push(key.to_string());
                buf.clear();
            }
            '}' => {
                if stack.is_empty() {
                    break;
                }
                let v = buf.trim();
                if !v.is_empty() {
                    map.insert(stack.join("/"), v.to_string());
                }
                stack.pop();
                buf.clear();
            }
            _ => buf.push(c),
        }
    }
    map
}

/// Read and parse a features file.
pub fn read_features_file(path: &Path) -> std::io::Result<BTreeMap<String, String>> {
    std::fs::read_to_string(path).map(|t| parse_features_file(&t))
}

/// AppArmor 4's mediation classes: true where the features say the kernel
/// (or the features file's kernel) mediates them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Apparmor4 {
    /// Where they were read: `kernel` or the features file's path.
    pub source: String,
    /// User-namespace creation (`namespaces/mask` lists `userns_create`,
    /// or Ubuntu's `namespaces/userns_create`).
    pub userns: bool,
    /// io_uring (`io_uring/mask`: `sqpoll`, `override_creds`).
    pub io_uring: Option<String>,
    /// POSIX message queues (`ipc/posix_mqueue`).
    pub mqueue: Option<String>,
    /// Fine-grained unix sockets (`network/af_unix` is `yes`).
    pub unix: bool,
    /// `policy/permstable32_version`: the newer policy format AppArmor 4
    /// kernels load.
    pub permstable32: Option<String>,
}

impl Apparmor4 {
    /// Read them from `src`, labelled `source`.
    pub fn read(src: &Source<'_>, source: &str) -> Apparmor4 {
        let some = |rel: &str| src.get(rel).filter(|v| !v.is_empty());
        Apparmor4 {
            source: source.to_string(),
            userns: src.lists("namespaces/mask", "userns_create")
                || src.get("namespaces/userns_create").is_some(),
            io_uring: some("io_uring/mask"),
            mqueue: some("ipc/posix_mqueue"),
            unix: src.get("network/af_unix").as_deref() == Some("yes"),
            permstable32: some("policy/permstable32_version"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An excerpt of Debian 13's (AppArmor 4.1, kernel 6.12) shipped file.
    const TRIXIE: &str = "capability {0xffffff\n}\ncaps {mask {chown dac_override\n}\n}\n\
        domain {stack {yes\n}\nversion {1.2\n}\n}\nio_uring {mask {sqpoll override_creds\n}\n}\n\
        mount {mask {mount umount pivot_root\n}\n}\n\
        namespaces {mask {userns_create\n}\npivot_root {no\n}\nprofile {yes\n}\n}\n\
        network_v8 {af_mask {unspec unix inet\n}\n}\n\
        policy {permstable32_version {0x000001\n}\nset_load {yes\n}\n}\n";
    /// An excerpt of Debian 12's (AppArmor 3.0, kernel 6.1).
    const BOOKWORM: &str = "domain {stack {yes\n}\nversion {1.2\n}\n}\n\
        mount {mask {mount umount pivot_root\n}\n}\n\
        namespaces {pivot_root {no\n}\nprofile {yes\n}\n}\n\
        network {af_unix {yes\n}\n}\npolicy {set_load {yes\n}\n}\n";

    #[test]
    fn a_features_file_parses_to_paths() {
        let m = parse_features_file(TRIXIE);
        assert_eq!(m["domain/version"], "1.2");
        assert_eq!(m["io_uring/mask"], "sqpoll override_creds");
        assert_eq!(m["namespaces/mask"], "userns_create");
        assert_eq!(m["capability"], "0xffffff");
        let s = Source::File(&m);
        assert_eq!(s.get("namespaces").as_deref(), Some(""));
        assert_eq!(s.get("ipc"), None);
    }

    #[test]
    fn debian_13_features_show_userns_and_io_uring() {
        let m = parse_features_file(TRIXIE);
        let a = Apparmor4::read(&Source::File(&m), "file");
        assert!(a.userns);
        assert_eq!(a.io_uring.as_deref(), Some("sqpoll override_creds"));
        assert_eq!(a.mqueue, None);
        assert!(!a.unix);
        assert_eq!(a.permstable32.as_deref(), Some("0x000001"));
    }

    #[test]
    fn debian_12_features_show_none() {
        let m = parse_features_file(BOOKWORM);
        let a = Apparmor4::read(&Source::File(&m), "file");
        assert!(!a.userns && a.io_uring.is_none() && a.mqueue.is_none());
        assert!(a.unix, "network/af_unix yes");
        assert_eq!(a.permstable32, None);
    }

    #[test]
    fn the_kernel_tree_reads_the_same() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let f = root.apparmor_dir().join("features");
        std::fs::create_dir_all(f.join("namespaces")).unwrap();
        std::fs::create_dir_all(f.join("ipc")).unwrap();
        std::fs::write(f.join("namespaces/mask"), "userns_create\n").unwrap();
        std::fs::write(f.join("ipc/posix_mqueue"), "create read write\n").unwrap();
        let a = Apparmor4::read(&Source::Kernel(&root), "kernel");
        assert!(a.userns);
        assert_eq!(a.mqueue.as_deref(), Some("create read write"));
        assert_eq!(a.io_uring, None);
    }

    #[test]
    fn unbalanced_text_keeps_what_was_read() {
        let m = parse_features_file("a {b {x\n}\n}\n}\nc {y\n}\n");
        assert_eq!(m.get("a/b").map(String::as_str), Some("x"));
        assert_eq!(m.get("c"), None);
    }
}
