//! Installing a profile: write the files it is compiled from when they
//! changed, then load it when needed. The one sequence behind the libvirt
//! hook and helper, the LXC hook, `reload` and `install`.

use std::path::Path;

use super::kernel::Kernel;
use super::parser::{Parser, ParserError};
use crate::store::{StoreError, Txn};

/// A file a profile is compiled from, to be written before the load.
#[derive(Debug, Clone, Copy)]
pub struct ProfileFile<'a> {
    /// Where.
    pub path: &'a Path,
    /// What.
    pub content: &'a [u8],
    /// Permission bits.
    pub mode: u32,
    /// Written only when missing: an admin-editable file that exists is
    /// never overwritten.
    pub create_only: bool,
}

/// When [`install_profile`] loads the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadWhen {
    /// Always (a load asked for explicitly, or state that may be stale).
    Always,
    /// When a file changed or the kernel does not have the profile.
    ChangedOrNotLoaded,
    /// Only when the kernel has the profile already (a reload: one that is
    /// not loaded loads at its guest's next start).
    IfLoaded,
}

/// What [`install_profile`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileInstalled {
    /// For each file given, in order: was it written.
    pub written: Vec<bool>,
    /// Did the kernel have the profile before (`false` when not asked).
    pub was_loaded: bool,
    /// Was the profile loaded (or replaced) now.
    pub loaded: bool,
    /// When loaded: did the policy come from the cache.
    pub from_cache: bool,
}

/// Why [`install_profile`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The parser rejected the profile or could not load it.
    #[error(transparent)]
    Parser(#[from] ParserError),
}

/// Write `files` in `txn` (each only when its content changed, or when
/// missing for `create_only`), then load profile `name` from the file
/// `profile` with `parser` when `when` says so. The caller holds the
/// profile's lock and commits `txn` on success; dropping it after an error
/// restores the previous files, and the kernel keeps the previous policy.
pub fn install_profile(
    kernel: &dyn Kernel,
    parser: &Parser,
    txn: &mut Txn,
    name: &str,
    profile: &Path,
    files: &[ProfileFile],
    when: LoadWhen,
) -> Result<ProfileInstalled, LoadError> {
    let mut written = Vec::with_capacity(files.len());
    for f in files {
        written.push(if f.create_only {
            txn.create_once(f.path, f.content, f.mode)?
        } else {
            txn.write_if_changed(f.path, f.content, f.mode)?
        });
    }
    let changed = written.iter().any(|w| *w);
    let ask = || kernel.profile_mode(name).ok().flatten().is_some();
    let (was_loaded, load) = match when {
        LoadWhen::Always => (false, true),
        LoadWhen::ChangedOrNotLoaded => {
            let l = ask();
            (l, changed || !l)
        }
        LoadWhen::IfLoaded => {
            let l = ask();
            (l, l)
        }
    };
    let mut from_cache = false;
    if load {
        let r = kernel.replace(parser, name, profile)?;
        super::freshness::record_load(kernel, parser, name, r.inputs.as_deref());
        from_cache = r.from_cache;
    }
    Ok(ProfileInstalled {
        written,
        was_loaded,
        loaded: load,
        from_cache,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::fake::FakeKernel;

    fn profile(dir: &Path, name: &str, rule: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("profile {name} {{\n  {rule}\n}}\n")).unwrap();
        p
    }

    #[test]
    fn writes_when_changed_and_loads_when_needed() {
        let d = tempfile::tempdir().unwrap();
        let k = FakeKernel::create(&d.path().join("fs")).unwrap();
        let parser = Parser::new();
        let prof = profile(d.path(), "t", "/a r,");
        let files_path = d.path().join("t.files");
        let run = |content: &[u8], when| {
            let mut txn = Txn::new();
            let f = ProfileFile {
                path: &files_path,
                content,
                mode: 0o644,
                create_only: false,
            };
            let r = install_profile(&k, &parser, &mut txn, "t", &prof, &[f], when);
            if r.is_ok() {
                txn.commit();
            }
            r
        };
        let r = run(b"x", LoadWhen::ChangedOrNotLoaded).unwrap();
        assert_eq!((r.written[0], r.was_loaded, r.loaded), (true, false, true));
        assert_eq!(k.loads(), 1);
        // Unchanged and loaded: nothing to do.
        let r = run(b"x", LoadWhen::ChangedOrNotLoaded).unwrap();
        assert_eq!((r.written[0], r.was_loaded, r.loaded), (false, true, false));
        assert_eq!(k.loads(), 1);
        // A failed load rolls the file back.
        k.fail_loads(true).unwrap();
        assert!(matches!(
            run(b"y", LoadWhen::ChangedOrNotLoaded),
            Err(LoadError::Parser(_))
        ));
        assert_eq!(std::fs::read(&files_path).unwrap(), b"x");
        k.fail_loads(false).unwrap();
        assert!(run(b"x", LoadWhen::IfLoaded).unwrap().loaded);
        assert!(run(b"x", LoadWhen::Always).unwrap().loaded);
        assert_eq!(k.loads(), 4);
        // The real parser still compiles what is loaded.
        let bad = profile(d.path(), "u", "/a bogus,");
        let mut txn = Txn::new();
        let e = install_profile(&k, &parser, &mut txn, "u", &bad, &[], LoadWhen::Always);
        assert!(matches!(e, Err(LoadError::Parser(_))), "{e:?}");
        assert_eq!(k.profile_mode("u").unwrap(), None);
        // IfLoaded leaves a profile the kernel does not have alone.
        let r = install_profile(&k, &parser, &mut txn, "u", &bad, &[], LoadWhen::IfLoaded).unwrap();
        assert!(!r.loaded && !r.was_loaded);
    }
}
