//! aa-virt's record beside `apparmor_parser`'s compiled-policy cache: what
//! a profile's cache entry was compiled from, and which file it is.
//!
//! One record per profile file, in [`INPUTS_DIR`]: the first line is the
//! digest of everything the profile is compiled from
//! ([`super::Parser::inputs_digest`]); a second line, when aa-virt could
//! tell which cache file the parser wrote, names that file with the
//! SHA-256 of its content and of the features it was compiled for. With
//! both, a load whose inputs are unchanged writes that file to the kernel
//! itself ([`super::kernel::SystemKernel`]) instead of starting the parser
//! to do the same. Anything that does not match exactly (the digest, the
//! features, the file's content) means the parser runs.
//!
//! Records are a cache: they are replaced atomically but not synced to
//! disk. A record lost or torn in a crash never matches, which costs one
//! compile.

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Directory inside the cache where aa-virt records what each cached
/// profile was compiled from.
pub const INPUTS_DIR: &str = "aa-virt-inputs";

/// Most bytes of compiled policy loaded from the cache without the parser
/// (a guest with thousands of disks compiles to a few MiB).
const MAX_POLICY: u64 = 64 << 20;

/// Hex of SHA-256.
pub fn hex_digest(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The record's path for `profile` in cache directory `cache`.
pub fn record_path(cache: &Path, profile: &Path) -> PathBuf {
    cache
        .join(INPUTS_DIR)
        .join(profile.file_name().unwrap_or_default())
}

/// The inputs digest a record holds (its first line).
pub fn recorded_inputs(record: &str) -> &str {
    record.lines().next().unwrap_or("")
}

/// Replace `path` with `text` atomically (a temporary file renamed over
/// it), without syncing: see the module docs. Best effort.
pub fn write_record(path: &Path, text: &str) {
    let Some(dir) = path.parent() else {
        return;
    };
    let _ = std::fs::create_dir_all(dir);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        "{}{}.{name}",
        crate::store::TMP_PREFIX,
        std::process::id()
    ));
    if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, path).is_ok() {
        return;
    }
    let _ = std::fs::remove_file(&tmp);
}

/// A cache file and what identifies its version (inode, size, mtime).
pub type Entry = (PathBuf, (u64, u64, i64, i64));

/// The cache files named `profile`'s file name in `cache`'s
/// per-features subdirectories.
pub fn entries(cache: &Path, profile: &Path) -> Vec<Entry> {
    use std::os::unix::fs::MetadataExt;
    let Some(file) = profile.file_name() else {
        return Vec::new();
    };
    let Ok(dirs) = std::fs::read_dir(cache) else {
        return Vec::new();
    };
    dirs.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with("aa-virt-") {
            return None; // aa-virt's own records, hidden files
        }
        let p = e.path().join(file);
        let m = std::fs::symlink_metadata(&p).ok()?;
        m.is_file()
            .then(|| (p, (m.ino(), m.len(), m.mtime(), m.mtime_nsec())))
    })
    .collect()
}

/// The one cache entry that differs from `before` (written by the parser
/// run in between), relative to `cache`; `None` when not exactly one did.
pub fn written_entry(cache: &Path, profile: &Path, before: &[Entry]) -> Option<PathBuf> {
    let mut changed = entries(cache, profile)
        .into_iter()
        .filter(|now| !before.contains(now))
        .map(|(p, _)| p);
    let one = changed.next()?;
    if changed.next().is_some() {
        return None;
    }
    one.strip_prefix(cache).ok().map(Path::to_path_buf)
}

/// The record line naming cache file `rel` (relative to `cache`) compiled
/// for features `features`, or `None` when it cannot be read.
pub fn policy_line(cache: &Path, rel: &Path, features: &str) -> Option<String> {
    let data = std::fs::read(cache.join(rel)).ok()?;
    let rel = rel.to_str().filter(|r| !r.contains(['\n', ' ']))?;
    Some(format!("policy {} {features} {rel}", hex_digest(&data)))
}

/// The compiled policy the record at `record` names, when its inputs are
/// `inputs`, it was compiled for `features`, and the file still has the
/// content recorded; `None` otherwise.
pub fn cached_policy(cache: &Path, record: &str, inputs: &str, features: &str) -> Option<Vec<u8>> {
    if recorded_inputs(record) != inputs {
        return None;
    }
    let line = record.lines().nth(1)?.strip_prefix("policy ")?;
    let mut f = line.splitn(3, ' ');
    let (sha, feat, rel) = (f.next()?, f.next()?, Path::new(f.next()?));
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if feat != features || !plain || rel.components().count() != 2 {
        return None;
    }
    let path = cache.join(rel);
    if std::fs::symlink_metadata(&path).ok()?.len() > MAX_POLICY {
        return None;
    }
    let data = std::fs::read(path).ok()?;
    (hex_digest(&data) == sha).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_policy_only_when_everything_matches() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path();
        let prof = Path::new("/etc/apparmor.d/libvirt/libvirt-x");
        std::fs::create_dir_all(cache.join("abc.0")).unwrap();
        std::fs::create_dir_all(cache.join("aa-virt-loaded")).unwrap();
        std::fs::write(cache.join("aa-virt-loaded/libvirt-x"), b"x").unwrap();
        std::fs::create_dir_all(cache.join(INPUTS_DIR)).unwrap();
        let before = entries(cache, prof);
        assert!(before.is_empty());
        std::fs::write(cache.join("abc.0/libvirt-x"), b"blob").unwrap();
        let rel = written_entry(cache, prof, &before).unwrap();
        assert_eq!(rel, Path::new("abc.0/libvirt-x"));
        // Nothing changed since: no entry was written.
        assert_eq!(written_entry(cache, prof, &entries(cache, prof)), None);
        let line = policy_line(cache, &rel, "F1").unwrap();
        let record = format!("walk:1\n{line}\n");
        assert_eq!(
            cached_policy(cache, &record, "walk:1", "F1").as_deref(),
            Some(&b"blob"[..])
        );
        // Other inputs, other features, a changed file, no policy line,
        // a path leaving the cache: never.
        assert_eq!(cached_policy(cache, &record, "walk:2", "F1"), None);
        assert_eq!(cached_policy(cache, &record, "walk:1", "F2"), None);
        assert_eq!(cached_policy(cache, "walk:1\n", "walk:1", "F1"), None);
        let sha = hex_digest(b"blob");
        let out = format!("walk:1\npolicy {sha} F1 ../abc.0/libvirt-x\n");
        assert_eq!(cached_policy(cache, &out, "walk:1", "F1"), None);
        std::fs::write(cache.join("abc.0/libvirt-x"), b"blob2").unwrap();
        assert_eq!(cached_policy(cache, &record, "walk:1", "F1"), None);
        // The record's first line is the digest, whatever follows.
        assert_eq!(recorded_inputs(&record), "walk:1");
        write_record(&cache.join(INPUTS_DIR).join("r"), &record);
        let back = std::fs::read_to_string(cache.join(INPUTS_DIR).join("r")).unwrap();
        assert_eq!(back, record);
    }
}
