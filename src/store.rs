//! Profile files on disk: atomic writes, write-only-if-changed, create-once,
//! and per-guest locks.
//!
//! Every write goes to a temporary file in the target's directory, is
//! fsynced, then renamed over the target, and the directory is fsynced: a
//! crash leaves either the old file or the new one, never a mix. Temporary
//! files carry a fixed prefix so a later run can sweep leftovers from a
//! crashed one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Prefix of temporary files; never a valid profile name.
pub const TMP_PREFIX: &str = ".aa-virt-tmp.";

/// Store errors; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O on a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The per-guest lock directory below `root` (`/run/aa-virt/lock`),
/// shared by libvirt guests and LXC containers.
pub fn lock_dir_under(root: &Path) -> PathBuf {
    root.join("run/aa-virt/lock")
}

/// The compiled-policy cache below `root` (`/var/cache/aa-virt/apparmor`),
/// shared by libvirt guests and LXC containers.
pub fn cache_dir_under(root: &Path) -> PathBuf {
    root.join("var/cache/aa-virt/apparmor")
}

/// A private scratch directory (mode 0700) under `$TMPDIR`.
pub fn tempdir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let p = base.join(format!(
            "aa-virt.{}.{}.{}",
            std::process::id(),
            i,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free scratch directory name",
    ))
}

/// Write `content` to `path` atomically (temp file, fsync, rename, fsync dir),
/// with mode `mode`. Creates the parent directory if needed.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attempt = 0u32;
    let (tmp, mut f) = loop {
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}.{}.{name}",
            std::process::id(),
            attempt
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(io("create", &tmp)(e)),
        }
    };
    let res = (|| {
        f.write_all(content).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// fsync a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

/// Write `content` unless the file already holds exactly that. Returns true
/// when it wrote. Keeping the mtime of an unchanged file keeps the parser's
/// compiled-policy cache valid.
pub fn write_if_changed(path: &Path, content: &[u8], mode: u32) -> Result<bool, StoreError> {
    match fs::read(path) {
        Ok(old) if old == content => Ok(false),
        Ok(_) => write_atomic(path, content, mode).map(|_| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_atomic(path, content, mode).map(|_| true)
        }
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Create `path` with `content` only if it does not exist yet (or exists but
/// is empty, the trace of an interrupted older tool). Returns true when it
/// created the file.
pub fn create_once(path: &Path, content: &[u8], mode: u32) -> Result<bool, StoreError> {
    match fs::metadata(path) {
        Ok(m) if m.len() > 0 => Ok(false),
        Ok(_) => write_atomic(path, content, mode).map(|_| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Write to a temp file, then link it into place: link fails if
            // another process created the file meanwhile, so we never
            // overwrite an admin's file.
            let dir = path.parent().unwrap_or(Path::new("/"));
            let tmp = dir.join(format!(
                "{TMP_PREFIX}{}.new.{}",
                std::process::id(),
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            write_atomic(&tmp, content, mode)?;
            let r = fs::hard_link(&tmp, path);
            let _ = fs::remove_file(&tmp);
            match r {
                Ok(()) => {
                    sync_dir(dir)?;
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(io("create", path)(e)),
            }
        }
        Err(e) => Err(io("stat", path)(e)),
    }
}

/// Append `line` and a newline to `path` (created when missing) in one
/// `O_APPEND` write, so that it lands whole even when several processes or
/// threads append at once: `writeln!` writes the text and the newline
/// separately, and those interleave.
pub fn append_line(path: &Path, line: &str) -> io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(format!("{line}\n").as_bytes())
}

/// Remove a file; a file that is already gone is fine.
pub fn remove(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("remove", path)(e)),
    }
}

/// Remove temporary files left in `dir` by a crashed run of ours (only
/// those whose writer is no longer alive).
pub fn sweep_temp(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
            continue;
        };
        let pid: i32 = rest
            .split('.')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
        if !alive && fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// An exclusive advisory lock, released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Take the exclusive lock for `key` (a guest's profile name) under `dir`,
/// waiting for any other holder.
pub fn lock(dir: &Path, key: &str) -> Result<Lock, StoreError> {
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{safe}.lock"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io("open lock", &path))?;
    loop {
        // SAFETY: flock on a descriptor we own.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(io("lock", &path)(e));
        }
    }
    Ok(Lock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_change_detection() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/f");
        assert!(write_if_changed(&p, b"a", 0o644).unwrap());
        assert!(!write_if_changed(&p, b"a", 0o644).unwrap());
        assert!(write_if_changed(&p, b"b", 0o644).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"b");
        let left: Vec<_> = fs::read_dir(d.path().join("sub")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp files left");
    }

    #[test]
    fn create_once_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("prof");
        assert!(create_once(&p, b"first", 0o644).unwrap());
        assert!(!create_once(&p, b"second", 0o644).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"first");
        fs::write(&p, b"").unwrap();
        assert!(create_once(&p, b"third", 0o644).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"third");
    }

    #[test]
    fn sweep_removes_dead_writers_temp_files() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(format!("{TMP_PREFIX}999999999.0.x")), b"half").unwrap();
        fs::write(
            d.path()
                .join(format!("{TMP_PREFIX}{}.0.y", std::process::id())),
            b"mine",
        )
        .unwrap();
        assert_eq!(sweep_temp(d.path()), 1);
    }

    #[test]
    fn lock_excludes() {
        let d = tempfile::tempdir().unwrap();
        let l = lock(d.path(), "libvirt-x").unwrap();
        assert!(l.path().ends_with("libvirt-x.lock"));
        let f = File::open(l.path()).unwrap();
        // SAFETY: non-blocking probe on our own descriptor.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(r, -1);
        drop(l);
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(r, 0);
    }
}

/// A group of file changes that is undone unless committed: dropping an
/// uncommitted transaction restores every file it changed to its previous
/// content (or removes it if it did not exist). Callers write their files,
/// load the policy, and commit only when the load worked, so a failed load
/// leaves the previous files (and, since the kernel kept it, the previous
/// policy) in force.
#[derive(Debug, Default)]
pub struct Txn {
    undo: Vec<(PathBuf, Option<Vec<u8>>, u32)>,
    committed: bool,
}

impl Txn {
    /// A new, empty transaction.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// A file's current content (`None` when absent) and mode.
    fn snapshot(path: &Path) -> Result<(Option<Vec<u8>>, u32), StoreError> {
        let old = match fs::read(path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("read", path)(e)),
        };
        let mode = fs::metadata(path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o644);
        Ok((old, mode))
    }

    fn remember(&mut self, path: &Path) -> Result<(), StoreError> {
        let (old, mode) = Self::snapshot(path)?;
        self.undo.push((path.to_path_buf(), old, mode));
        Ok(())
    }

    /// [`write_if_changed`], undone on rollback. The file is read once,
    /// both to compare and to remember for the rollback.
    pub fn write_if_changed(
        &mut self,
        path: &Path,
        content: &[u8],
        mode: u32,
    ) -> Result<bool, StoreError> {
        let (old, old_mode) = Self::snapshot(path)?;
        if old.as_deref() == Some(content) {
            return Ok(false);
        }
        self.undo.push((path.to_path_buf(), old, old_mode));
        write_atomic(path, content, mode).map(|_| true)
    }

    /// [`create_once`], undone on rollback when it created the file.
    pub fn create_once(
        &mut self,
        path: &Path,
        content: &[u8],
        mode: u32,
    ) -> Result<bool, StoreError> {
        let created = create_once(path, content, mode)?;
        if created {
            self.undo.push((path.to_path_buf(), None, mode));
        }
        Ok(created)
    }

    /// [`remove`], undone on rollback.
    pub fn remove(&mut self, path: &Path) -> Result<bool, StoreError> {
        self.remember(path)?;
        remove(path)
    }

    /// Keep the changes.
    pub fn commit(mut self) {
        self.committed = true;
    }

    fn rollback_now(&mut self) {
        while let Some((path, old, mode)) = self.undo.pop() {
            let r = match old {
                Some(b) => write_atomic(&path, &b, mode),
                None => remove(&path).map(|_| ()),
            };
            if let Err(e) = r {
                tracing::error!("rolling back {}: {e}", path.display());
            }
        }
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        if !self.committed {
            self.rollback_now();
        }
    }
}

#[cfg(test)]
mod txn_tests {
    use super::*;

    #[test]
    fn uncommitted_changes_are_undone() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        fs::write(&a, b"old").unwrap();
        {
            let mut t = Txn::new();
            assert!(t.write_if_changed(&a, b"new", 0o644).unwrap());
            assert!(t.create_once(&b, b"created", 0o644).unwrap());
            assert_eq!(fs::read(&a).unwrap(), b"new");
        }
        assert_eq!(fs::read(&a).unwrap(), b"old");
        assert!(!b.exists());
    }

    #[test]
    fn committed_changes_stay() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let mut t = Txn::new();
        t.write_if_changed(&a, b"new", 0o644).unwrap();
        t.commit();
        assert_eq!(fs::read(&a).unwrap(), b"new");
    }
}
