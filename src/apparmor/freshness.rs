//! Is a loaded profile the policy on disk? At every load aa-virt records,
//! beside the compiled-policy cache, the digest of everything the profile
//! was compiled from (the profile with every include expanded: its
//! `.files`, the abstractions, `local/` overrides; see
//! [`Parser::inputs_digest`]) and the kernel's own hash of what it
//! then had loaded ([`Kernel::policy_hash`]). Later, the same digest
//! computed from disk and the kernel's hash now are compared with that
//! record: a changed abstraction (a package upgrade) or an edited `local/`
//! file changes the digest; a profile replaced behind aa-virt's back
//! changes the kernel's hash.

use std::path::{Path, PathBuf};

use super::kernel::Kernel;
use super::parser::Parser;

/// Directory inside the cache holding one load record per profile name.
pub const LOADED_DIR: &str = "aa-virt-loaded";

/// Whether a loaded profile matches its policy on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// The kernel runs exactly what the files on disk compile to.
    Current,
    /// It does not (or it cannot be shown that it does); why.
    Stale(String),
}

impl Freshness {
    /// `current`, or `stale: <why>`.
    pub fn describe(&self) -> String {
        match self {
            Freshness::Current => "current".into(),
            Freshness::Stale(why) => format!("stale: {why}"),
        }
    }
}

/// The record's file name: the profile name with `%`, `/`, control
/// characters and a leading `.` percent-encoded (one file per name, never
/// a path outside the directory).
fn record_file(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        if c == '%' || c == '/' || c.is_control() || (i == 0 && c == '.') {
            let mut b = [0; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn record_path(parser: &Parser, name: &str) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    Some(
        parser
            .cache
            .as_ref()?
            .join(LOADED_DIR)
            .join(record_file(name)),
    )
}

fn render(inputs: &str, kernel: Option<&str>) -> String {
    format!("inputs {inputs}\nkernel {}\n", kernel.unwrap_or("-"))
}

/// Record that profile `name` was just loaded from inputs with digest
/// `inputs` (what [`Kernel::replace`] returned; call after a successful
/// load). Best effort, and not synced to disk: without a record the
/// profile shows as stale until its next load, never as current.
pub fn record_load(kernel: &dyn Kernel, parser: &Parser, name: &str, inputs: Option<&str>) {
    let Some(path) = record_path(parser, name) else {
        return;
    };
    let _ = std::fs::remove_file(&path);
    let Some(inputs) = inputs else {
        return;
    };
    let hash = kernel.policy_hash(name).ok().flatten();
    super::cache::write_record(&path, &render(inputs, hash.as_deref()));
}

/// Compare loaded profile `name` with `profile` on disk as `parser` (with
/// the cache the loads use) compiles it. `None` when the kernel does not
/// have the profile loaded.
pub fn freshness(
    kernel: &dyn Kernel,
    parser: &Parser,
    name: &str,
    profile: &Path,
) -> Option<Freshness> {
    kernel.profile_mode(name).ok().flatten()?;
    let stale = |why: &str| Some(Freshness::Stale(why.to_string()));
    let Some(record) = record_path(parser, name).and_then(|p| std::fs::read_to_string(p).ok())
    else {
        return stale("no record of aa-virt loading it (loaded by hand or by an older aa-virt)");
    };
    let field = |key: &str| {
        record
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .map(str::to_string)
    };
    let (Some(inputs), Some(was)) = (field("inputs"), field("kernel")) else {
        return stale("its load record is unreadable");
    };
    let now = kernel.policy_hash(name).ok().flatten();
    if was != "-" && now.as_deref().is_some_and(|h| h != was) {
        return stale("the kernel's policy was replaced since aa-virt loaded it");
    }
    match parser.inputs_digest(profile) {
        None => stale(&format!(
            "{} no longer preprocesses (a missing include?)",
            profile.display()
        )),
        Some(d) if d != inputs => stale(&format!(
            "{} or what it includes changed since it was loaded",
            profile.display()
        )),
        Some(_) => Some(Freshness::Current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::fake::FakeKernel;
    use crate::apparmor::{install_profile, LoadWhen};
    use crate::store::Txn;

    #[test]
    fn record_files_are_one_plain_name_each() {
        assert_eq!(record_file("libvirt-1"), "libvirt-1");
        assert_eq!(record_file("lxc-a_</v>"), "lxc-a_<%2Fv>");
        assert_eq!(record_file(".."), "%2E.");
        assert_eq!(record_file("a%2Fb"), "a%252Fb");
        assert_eq!(record_file("a\nb"), "a%0Ab");
    }

    #[test]
    fn stale_after_an_include_or_a_local_edit_and_current_after_a_load() {
        let d = tempfile::tempdir().unwrap();
        let k = FakeKernel::create(&d.path().join("fs")).unwrap();
        let etc = d.path().join("etc");
        std::fs::create_dir_all(etc.join("abstractions")).unwrap();
        std::fs::create_dir_all(etc.join("local")).unwrap();
        std::fs::write(etc.join("abstractions/base-x"), "  /a r,\n").unwrap();
        let prof = etc.join("g");
        std::fs::write(
            &prof,
            "profile g {\n  include <abstractions/base-x>\n  include if exists <local/g>\n}\n",
        )
        .unwrap();
        let mut parser = Parser::new();
        parser.includes = vec![etc.clone()];
        parser.cache = Some(d.path().join("cache"));
        let load = || {
            let mut txn = Txn::new();
            install_profile(&k, &parser, &mut txn, "g", &prof, &[], LoadWhen::Always).unwrap();
            txn.commit();
        };
        assert_eq!(freshness(&k, &parser, "g", &prof), None, "not loaded");
        load();
        assert_eq!(freshness(&k, &parser, "g", &prof), Some(Freshness::Current));
        // An upgrade changes an abstraction.
        std::fs::write(etc.join("abstractions/base-x"), "  /a rw,\n").unwrap();
        let f = freshness(&k, &parser, "g", &prof).unwrap();
        assert!(
            matches!(&f, Freshness::Stale(w) if w.contains("changed")),
            "{f:?}"
        );
        load();
        assert_eq!(freshness(&k, &parser, "g", &prof), Some(Freshness::Current));
        // An admin edits local/, then takes the edit out again.
        std::fs::write(etc.join("local/g"), "  /b r,\n").unwrap();
        assert!(matches!(
            freshness(&k, &parser, "g", &prof),
            Some(Freshness::Stale(_))
        ));
        load();
        assert_eq!(freshness(&k, &parser, "g", &prof), Some(Freshness::Current));
        std::fs::remove_file(etc.join("local/g")).unwrap();
        assert!(matches!(
            freshness(&k, &parser, "g", &prof),
            Some(Freshness::Stale(_))
        ));
        load();
        // Someone replaces the profile by hand.
        k.replace_behind_back("g").unwrap();
        let f = freshness(&k, &parser, "g", &prof).unwrap();
        assert!(
            matches!(&f, Freshness::Stale(w) if w.contains("replaced")),
            "{f:?}"
        );
        load();
        assert_eq!(freshness(&k, &parser, "g", &prof), Some(Freshness::Current));
        // No record: never claimed current.
        std::fs::remove_dir_all(d.path().join("cache").join(LOADED_DIR)).unwrap();
        assert!(matches!(
            freshness(&k, &parser, "g", &prof),
            Some(Freshness::Stale(_))
        ));
    }
}
