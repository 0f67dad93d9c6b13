//! A small safe layer over liblxc (`lxc-sys`): the default lxcpath, and the
//! containers of an lxcpath with their state, init pid and configuration
//! items, read in-process (no `lxc-ls`/`lxc-info` spawns).
//!
//! liblxc is not linked: `liblxc.so.1` is loaded with `dlopen` the first
//! time it is needed ([`api`]), so commands that never read containers do
//! not load it at process start. Only `lxc-sys`'s struct layout of
//! `struct lxc_container` (whose methods are function pointers) is used.
//!
//! Every raw call is in this file. Each container object returned by
//! liblxc is released with `lxc_container_put`, and every array and string
//! liblxc allocates is freed with `free`, on every path.

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

/// Errors from liblxc.
#[derive(Debug, thiserror::Error)]
pub enum LiblxcError {
    /// The lxcpath cannot be passed to C (it contains a NUL byte).
    #[error("lxcpath {0:?} contains a NUL byte")]
    BadPath(PathBuf),
    /// A container name cannot be passed to C.
    #[error("container name {0:?} contains a NUL byte")]
    BadName(String),
    /// liblxc could not be loaded.
    #[error("{0}")]
    NotInstalled(String),
    /// Listing failed.
    #[error("cannot list the containers in {lxcpath}: liblxc returned an error (is the directory readable?)")]
    List {
        /// The lxcpath.
        lxcpath: PathBuf,
    },
}

/// The run state of a container, as liblxc names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// `STOPPED`
    Stopped,
    /// `STARTING`
    Starting,
    /// `RUNNING`
    Running,
    /// `STOPPING`
    Stopping,
    /// `ABORTING`
    Aborting,
    /// `FREEZING`
    Freezing,
    /// `FROZEN`
    Frozen,
    /// `THAWED`
    Thawed,
    /// Anything else.
    Unknown,
}

impl ContainerState {
    fn parse(s: &str) -> ContainerState {
        match s {
            "STOPPED" => ContainerState::Stopped,
            "STARTING" => ContainerState::Starting,
            "RUNNING" => ContainerState::Running,
            "STOPPING" => ContainerState::Stopping,
            "ABORTING" => ContainerState::Aborting,
            "FREEZING" => ContainerState::Freezing,
            "FROZEN" => ContainerState::Frozen,
            "THAWED" => ContainerState::Thawed,
            _ => ContainerState::Unknown,
        }
    }

    /// Lower-case name (`running`, `stopped`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Stopped => "stopped",
            ContainerState::Starting => "starting",
            ContainerState::Running => "running",
            ContainerState::Stopping => "stopping",
            ContainerState::Aborting => "aborting",
            ContainerState::Freezing => "freezing",
            ContainerState::Frozen => "frozen",
            ContainerState::Thawed => "thawed",
            ContainerState::Unknown => "unknown",
        }
    }
}

/// One container of an lxcpath.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// Its name.
    pub name: String,
    /// The lxcpath it lives in.
    pub lxcpath: PathBuf,
    /// Its config file (`<lxcpath>/<name>/config`).
    pub config_file: PathBuf,
    /// Its state.
    pub state: ContainerState,
    /// The pid of its init while it runs.
    pub init_pid: Option<u32>,
    /// `lxc.apparmor.profile` from its configuration, when set.
    pub apparmor_profile: Option<String>,
}

/// The liblxc functions we call (the rest are methods of the container).
struct Api {
    get_version: unsafe extern "C" fn() -> *const c_char,
    get_global_config_item: unsafe extern "C" fn(*const c_char) -> *const c_char,
    container_new:
        unsafe extern "C" fn(*const c_char, *const c_char) -> *mut lxc_sys::lxc_container,
    container_put: unsafe extern "C" fn(*mut lxc_sys::lxc_container) -> c_int,
    list_all_containers: unsafe extern "C" fn(
        *const c_char,
        *mut *mut *mut c_char,
        *mut *mut *mut lxc_sys::lxc_container,
    ) -> c_int,
    // Keeps the library mapped for the life of the process.
    _lib: libloading::Library,
}

fn load() -> Result<Api, String> {
    let missing = |e: libloading::Error| {
        format!("liblxc is not installed (liblxc1): cannot list LXC containers ({e})")
    };
    // SAFETY: loading liblxc runs its constructors, which only set up its
    // own state.
    let lib = unsafe { libloading::Library::new("liblxc.so.1") }.map_err(missing)?;
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: each symbol is declared above with the C signature of
            // lxccontainer.h; the pointer is used only while `_lib` keeps
            // the library loaded.
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(missing)?
        };
    }
    Ok(Api {
        get_version: sym!("lxc_get_version"),
        get_global_config_item: sym!("lxc_get_global_config_item"),
        container_new: sym!("lxc_container_new"),
        container_put: sym!("lxc_container_put"),
        list_all_containers: sym!("list_all_containers"),
        _lib: lib,
    })
}

/// liblxc, loaded on first use.
fn api() -> Result<&'static Api, LiblxcError> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load)
        .as_ref()
        .map_err(|e| LiblxcError::NotInstalled(e.clone()))
}

/// liblxc's version string; empty when liblxc is not installed.
pub fn version() -> String {
    let Ok(api) = api() else {
        return String::new();
    };
    // SAFETY: returns a pointer to a static NUL-terminated string (or NULL).
    let p = unsafe { (api.get_version)() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL, NUL-terminated, static.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// LXC's configured default lxcpath (`lxc.lxcpath` in `lxc.conf`, else the
/// built-in `/var/lib/lxc`), as `lxc-config lxc.lxcpath` prints it. The
/// built-in value when liblxc is not installed.
pub fn default_lxcpath() -> PathBuf {
    let Ok(api) = api() else {
        return PathBuf::from("/var/lib/lxc");
    };
    let key = c"lxc.lxcpath";
    // SAFETY: key is a valid C string; liblxc returns a pointer to a value
    // it caches for the life of the process (not to be freed), or NULL.
    let p = unsafe { (api.get_global_config_item)(key.as_ptr()) };
    if p.is_null() {
        return PathBuf::from("/var/lib/lxc");
    }
    // SAFETY: non-NULL, NUL-terminated.
    let s = unsafe { CStr::from_ptr(p) };
    PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes()))
}

/// An owned `lxc_container *` (one reference), released on drop.
struct Handle(*mut lxc_sys::lxc_container, &'static Api);

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: we own exactly one reference to this container.
            unsafe { (self.1.container_put)(self.0) };
        }
    }
}

/// Take a `malloc`ed C string: copy it out and free it.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string allocated with `malloc` that
/// nothing else frees.
unsafe fn take_cstring(p: *mut c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let s = CStr::from_ptr(p).to_string_lossy().into_owned();
    libc::free(p.cast());
    Some(s)
}

impl Handle {
    fn c(&self) -> &lxc_sys::lxc_container {
        // SAFETY: non-NULL (checked at construction) and alive while we
        // hold our reference.
        unsafe { &*self.0 }
    }

    fn name(&self) -> Option<String> {
        let p = self.c().name;
        if p.is_null() {
            return None;
        }
        // SAFETY: liblxc keeps the name as a NUL-terminated string for the
        // object's life.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    fn state(&self) -> ContainerState {
        let Some(f) = self.c().state else {
            return ContainerState::Unknown;
        };
        // SAFETY: a method of this live container; it returns a static
        // string (or NULL).
        let p = unsafe { f(self.0) };
        if p.is_null() {
            return ContainerState::Unknown;
        }
        // SAFETY: non-NULL, NUL-terminated, static.
        ContainerState::parse(&unsafe { CStr::from_ptr(p) }.to_string_lossy())
    }

    fn init_pid(&self) -> Option<u32> {
        let f = self.c().init_pid?;
        // SAFETY: a method of this live container.
        let pid = unsafe { f(self.0) };
        u32::try_from(pid).ok().filter(|&p| p > 0)
    }

    fn config_file(&self) -> Option<PathBuf> {
        let f = self.c().config_file_name?;
        // SAFETY: returns a malloc'ed string we own, or NULL.
        unsafe { take_cstring(f(self.0)) }.map(PathBuf::from)
    }

    /// A config item's value; `None` when unset or unknown.
    fn config_item(&self, key: &CStr) -> Option<String> {
        let f = self.c().get_config_item?;
        // SAFETY: asking for the length with a NULL buffer is the
        // documented way to size it.
        let len = unsafe { f(self.0, key.as_ptr(), std::ptr::null_mut(), 0) };
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        let mut buf = vec![0u8; len + 1];
        let inlen = i32::try_from(buf.len()).ok()?;
        // SAFETY: buf has room for len bytes plus the NUL liblxc writes.
        let got = unsafe { f(self.0, key.as_ptr(), buf.as_mut_ptr().cast(), inlen) };
        if got < 0 {
            return None;
        }
        let s = CStr::from_bytes_until_nul(&buf).ok()?;
        Some(s.to_string_lossy().into_owned()).filter(|s| !s.is_empty())
    }
}

fn describe(h: &Handle, lxcpath: &Path) -> Option<Container> {
    let name = h.name()?;
    let state = h.state();
    Some(Container {
        config_file: h
            .config_file()
            .unwrap_or_else(|| lxcpath.join(&name).join("config")),
        init_pid: h.init_pid(),
        apparmor_profile: h.config_item(c"lxc.apparmor.profile"),
        lxcpath: lxcpath.to_path_buf(),
        state,
        name,
    })
}

fn c_path(p: &Path) -> Result<CString, LiblxcError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| LiblxcError::BadPath(p.to_path_buf()))
}

/// Every container (defined or running) in `lxcpath`, sorted by name. A
/// missing lxcpath has no containers.
pub fn list(lxcpath: &Path) -> Result<Vec<Container>, LiblxcError> {
    if !lxcpath.exists() {
        return Ok(Vec::new());
    }
    let api = api()?;
    let cpath = c_path(lxcpath)?;
    let mut names: *mut *mut c_char = std::ptr::null_mut();
    let mut cret: *mut *mut lxc_sys::lxc_container = std::ptr::null_mut();
    // SAFETY: cpath is a valid C string; liblxc allocates both arrays (and
    // each name) with malloc and hands over one reference per container.
    let n = unsafe { (api.list_all_containers)(cpath.as_ptr(), &mut names, &mut cret) };
    let count = usize::try_from(n).unwrap_or(0);
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: both arrays hold `count` entries; each entry is ours.
        unsafe {
            if !names.is_null() {
                libc::free((*names.add(i)).cast());
            }
            if !cret.is_null() {
                let c = *cret.add(i);
                if !c.is_null() {
                    handles.push(Handle(c, api));
                }
            }
        }
    }
    // SAFETY: the arrays themselves are malloc'ed and now empty of owners.
    unsafe {
        libc::free(names.cast());
        libc::free(cret.cast());
    }
    if n < 0 {
        return Err(LiblxcError::List {
            lxcpath: lxcpath.to_path_buf(),
        });
    }
    let mut out: Vec<Container> = handles
        .iter()
        .filter_map(|h| describe(h, lxcpath))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One container by name; `Ok(None)` when it is not defined in `lxcpath`.
pub fn get(lxcpath: &Path, name: &str) -> Result<Option<Container>, LiblxcError> {
    let api = api()?;
    let cpath = c_path(lxcpath)?;
    let cname = CString::new(name).map_err(|_| LiblxcError::BadName(name.to_string()))?;
    // SAFETY: valid C strings; returns a new reference or NULL.
    let p = unsafe { (api.container_new)(cname.as_ptr(), cpath.as_ptr()) };
    if p.is_null() {
        return Ok(None);
    }
    let h = Handle(p, api);
    let defined = match h.c().is_defined {
        // SAFETY: a method of this live container.
        Some(f) => unsafe { f(h.0) },
        None => false,
    };
    if !defined {
        return Ok(None);
    }
    Ok(describe(&h, lxcpath))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_and_version() {
        assert!(default_lxcpath().is_absolute());
        assert!(!version().is_empty());
    }

    #[test]
    fn lists_a_hand_made_container() {
        let d = tempfile::tempdir().unwrap();
        let ct = d.path().join("c1");
        std::fs::create_dir_all(ct.join("rootfs")).unwrap();
        std::fs::write(
            ct.join("config"),
            format!(
                "lxc.uts.name = c1\nlxc.rootfs.path = dir:{}\nlxc.apparmor.profile = lxc-c1_<-x>//&:lxc-c1_<-x>:\n",
                ct.join("rootfs").display()
            ),
        )
        .unwrap();
        let all = list(d.path()).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        let c = &all[0];
        assert_eq!(c.name, "c1");
        assert_eq!(c.state, ContainerState::Stopped);
        assert_eq!(c.init_pid, None);
        assert_eq!(
            c.apparmor_profile.as_deref(),
            Some("lxc-c1_<-x>//&:lxc-c1_<-x>:")
        );
        assert_eq!(c.config_file, ct.join("config"));
        assert_eq!(get(d.path(), "c1").unwrap().as_ref(), Some(c));
        assert_eq!(get(d.path(), "nope").unwrap(), None);
        assert_eq!(list(&d.path().join("missing")).unwrap(), vec![]);
    }
}
