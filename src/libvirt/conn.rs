//! A small safe layer over libvirt: open a connection, list every domain
//! with its name, UUID, id and state, read a domain's XML or its security
//! label, and close the connection explicitly.
//!
//! libvirt is not linked: `libvirt.so.0` is loaded with `dlopen` the first
//! time a connection is opened (see [`ffi`]), so the commands that never
//! talk to libvirt do not pay for loading it and its ~50 dependencies at
//! process start, and the binary runs on hosts without libvirt installed.
//! Every raw call is in [`ffi`]; each domain handle is released with
//! `virDomainFree` and each connection with `virConnectClose` exactly once.

use serde::Serialize;
use uuid::Uuid;

/// Errors talking to libvirt. Each names the URI, and the domain when
/// there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The connection could not be opened.
    #[error("cannot connect to {uri}: {message}{}", if *no_daemon { " (is the libvirt daemon running? try: systemctl start libvirtd)" } else { "" })]
    Connect {
        /// The URI.
        uri: String,
        /// libvirt's message.
        message: String,
        /// The failure looks like "no daemon listening".
        no_daemon: bool,
    },
    /// Listing domains failed.
    #[error("{uri}: cannot list domains: {message}")]
    List {
        /// The URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// A call on one domain failed.
    #[error("{uri}: domain {domain}: cannot {what}: {message}")]
    Domain {
        /// The URI.
        uri: String,
        /// Domain name or UUID.
        domain: String,
        /// What we tried.
        what: &'static str,
        /// libvirt's message.
        message: String,
    },
    /// Closing the connection failed.
    #[error("{uri}: closing the connection failed: {message}")]
    Close {
        /// The URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
}

/// A domain's run state, as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainState {
    /// No state.
    NoState,
    /// Running.
    Running,
    /// Blocked on a resource (virsh: idle).
    Blocked,
    /// Paused.
    Paused,
    /// Being shut down.
    Shutdown,
    /// Shut off.
    Shutoff,
    /// Crashed.
    Crashed,
    /// Suspended by guest power management.
    PmSuspended,
}

impl DomainState {
    /// The word `virsh list` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::NoState => "no state",
            DomainState::Running => "running",
            DomainState::Blocked => "idle",
            DomainState::Paused => "paused",
            DomainState::Shutdown => "in shutdown",
            DomainState::Shutoff => "shut off",
            DomainState::Crashed => "crashed",
            DomainState::PmSuspended => "pmsuspended",
        }
    }

    /// From libvirt's `virDomainState` number.
    fn from_raw(s: i32) -> DomainState {
        match s {
            1 => DomainState::Running,
            2 => DomainState::Blocked,
            3 => DomainState::Paused,
            4 => DomainState::Shutdown,
            5 => DomainState::Shutoff,
            6 => DomainState::Crashed,
            7 => DomainState::PmSuspended,
            _ => DomainState::NoState,
        }
    }
}

/// A domain's security label as libvirt reports it (for AppArmor: the
/// profile name the QEMU process runs under).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityLabel {
    /// The label text; empty when the domain has none.
    pub label: String,
    /// The security driver enforces it.
    pub enforcing: bool,
}

/// The host's primary security driver (`apparmor`, `selinux`, `none`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityModel {
    /// Driver name; empty when there is none.
    pub model: String,
    /// Domain of interpretation.
    pub doi: String,
}

/// One domain, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainInfo {
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: Uuid,
    /// Hypervisor id while active.
    pub id: Option<u32>,
    /// Run state.
    pub state: DomainState,
    /// The security label, when asked for and the domain is active.
    pub label: Option<Result<SecurityLabel, String>>,
}

impl DomainInfo {
    /// Active: the domain has a hypervisor process (running, paused, ...).
    pub fn is_active(&self) -> bool {
        self.id.is_some()
    }
}

/// An open, read-only libvirt connection.
pub struct Conn {
    raw: ffi::RawConn,
    uri: String,
    closed: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("uri", &self.uri).finish()
    }
}

/// True when `uri` names this host (no host part), e.g. `qemu:///system`,
/// `qemu+unix:///system`, `test:///default`; false for `qemu+ssh://h/system`.
pub fn is_local_uri(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((_, rest)) => {
            let host = rest.split(['/', '?']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or("");
            let host = host.split(':').next().unwrap_or("");
            host.is_empty() || host == "localhost"
        }
        // A bare driver name (`qemu:`) is local.
        None => true,
    }
}

impl Conn {
    /// Open `uri` read-only (listing needs nothing more). When libvirt
    /// itself is not installed this is a [`ConnError::Connect`] saying so.
    pub fn open(uri: &str) -> Result<Conn, ConnError> {
        let connect_err = |message: String| {
            let no_daemon = message.contains("Failed to connect socket")
                || message.contains("No such file or directory")
                || message.contains("Connection refused");
            ConnError::Connect {
                uri: uri.to_string(),
                message,
                no_daemon,
            }
        };
        let curi = std::ffi::CString::new(uri)
            .map_err(|_| connect_err("the URI contains a NUL byte".to_string()))?;
        let raw = ffi::RawConn::open_read_only(&curi).map_err(connect_err)?;
        Ok(Conn {
            raw,
            uri: uri.to_string(),
            closed: false,
        })
    }

    /// The URI this connection was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn dom_err(&self, domain: &str, what: &'static str, message: String) -> ConnError {
        ConnError::Domain {
            uri: self.uri.clone(),
            domain: domain.to_string(),
            what,
            message,
        }
    }

    /// Every domain (active and inactive), sorted by name. The state is
    /// only asked of active domains (an inactive one is shut off); the
    /// security label is asked of active ones when `labels` is set. A
    /// domain that disappears while we list is left out.
    pub fn domains(&self, labels: bool) -> Result<Vec<DomainInfo>, ConnError> {
        let doms = self
            .raw
            .list_all_domains()
            .map_err(|message| ConnError::List {
                uri: self.uri.clone(),
                message,
            })?;
        let mut out = Vec::with_capacity(doms.len());
        for d in &doms {
            let (Ok(name), Ok(uuid)) = (d.name(), d.uuid()) else {
                continue;
            };
            let id = d.id();
            let state = match id {
                None => DomainState::Shutoff,
                Some(_) => match d.state() {
                    Ok(s) => DomainState::from_raw(s),
                    Err(_) => continue,
                },
            };
            let label = (labels && id.is_some()).then(|| {
                d.security_label().map_err(|m| {
                    self.dom_err(&name, "read the security label", m)
                        .to_string()
                })
            });
            out.push(DomainInfo {
                name,
                uuid,
                id,
                state,
                label,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn lookup(&self, name_or_uuid: &str) -> Result<ffi::RawDomain, ConnError> {
        self.raw
            .lookup(name_or_uuid, Uuid::parse_str(name_or_uuid).is_ok())
            .map_err(|m| self.dom_err(name_or_uuid, "find the domain", m))
    }

    /// One domain by name or UUID; `Ok(None)` when there is no such domain.
    pub fn find(&self, name_or_uuid: &str) -> Result<Option<DomainInfo>, ConnError> {
        let d = match self.lookup(name_or_uuid) {
            Ok(d) => d,
            Err(ConnError::Domain { message, .. })
                if message.contains("not found") || message.contains("no domain") =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let name = d
            .name()
            .map_err(|m| self.dom_err(name_or_uuid, "read the name", m))?;
        let uuid = d
            .uuid()
            .map_err(|m| self.dom_err(&name, "read the uuid", m))?;
        let id = d.id();
        let state = match id {
            None => DomainState::Shutoff,
            Some(_) => DomainState::from_raw(
                d.state()
                    .map_err(|m| self.dom_err(&name, "read the state", m))?,
            ),
        };
        let label = id.is_some().then(|| {
            d.security_label().map_err(|m| {
                self.dom_err(&name, "read the security label", m)
                    .to_string()
            })
        });
        Ok(Some(DomainInfo {
            name,
            uuid,
            id,
            state,
            label,
        }))
    }

    /// The domain's XML (the live definition while it runs).
    pub fn xml(&self, name_or_uuid: &str) -> Result<String, ConnError> {
        let d = self.lookup(name_or_uuid)?;
        d.xml_desc()
            .map_err(|m| self.dom_err(name_or_uuid, "read the domain XML", m))
    }

    /// The host's primary security driver.
    pub fn security_model(&self) -> Result<SecurityModel, ConnError> {
        self.raw.security_model().map_err(|m| ConnError::List {
            uri: self.uri.clone(),
            message: format!("cannot read the security model: {m}"),
        })
    }

    /// Close the connection, reporting a failure instead of panicking.
    pub fn close(mut self) -> Result<(), ConnError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<(), ConnError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        // SAFETY: `closed` guarantees this runs once, and nothing uses the
        // connection after it (every other method takes `&self` on a `Conn`
        // that is being consumed or dropped).
        unsafe { self.raw.close() }.map_err(|message| ConnError::Close {
            uri: self.uri.clone(),
            message,
        })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!("{e}");
        }
    }
}

/// The raw libvirt calls, through `libvirt.so.0` loaded at run time.
mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
    use std::sync::OnceLock;

    use uuid::Uuid;

    use super::{SecurityLabel, SecurityModel};

    /// The shared object, by its soname (package `libvirt0`).
    const LIBVIRT: &str = "libvirt.so.0";
    /// `VIR_SECURITY_LABEL_BUFLEN` (libvirt-host.h).
    const LABEL_BUFLEN: usize = 4096 + 1;
    /// `VIR_SECURITY_MODEL_BUFLEN` (libvirt-host.h).
    const MODEL_BUFLEN: usize = 256 + 1;
    /// `VIR_SECURITY_DOI_BUFLEN` (libvirt-host.h).
    const DOI_BUFLEN: usize = 256 + 1;
    /// `VIR_UUID_STRING_BUFLEN` (libvirt-host.h): 36 characters and a NUL.
    const UUID_STRING_BUFLEN: usize = 36 + 1;

    /// `virSecurityLabel` (libvirt-host.h).
    #[repr(C)]
    struct VirSecurityLabel {
        label: [c_char; LABEL_BUFLEN],
        enforcing: c_int,
    }

    /// `virSecurityModel` (libvirt-host.h).
    #[repr(C)]
    struct VirSecurityModel {
        model: [c_char; MODEL_BUFLEN],
        doi: [c_char; DOI_BUFLEN],
    }

    type Ptr = *mut c_void;
    type ErrorFunc = unsafe extern "C" fn(Ptr, Ptr);

    /// The functions we call, resolved once.
    struct Api {
        open_read_only: unsafe extern "C" fn(*const c_char) -> Ptr,
        close: unsafe extern "C" fn(Ptr) -> c_int,
        list_all_domains: unsafe extern "C" fn(Ptr, *mut *mut Ptr, c_uint) -> c_int,
        lookup_by_name: unsafe extern "C" fn(Ptr, *const c_char) -> Ptr,
        lookup_by_uuid_string: unsafe extern "C" fn(Ptr, *const c_char) -> Ptr,
        domain_free: unsafe extern "C" fn(Ptr) -> c_int,
        domain_name: unsafe extern "C" fn(Ptr) -> *const c_char,
        domain_uuid_string: unsafe extern "C" fn(Ptr, *mut c_char) -> c_int,
        domain_id: unsafe extern "C" fn(Ptr) -> c_uint,
        domain_state: unsafe extern "C" fn(Ptr, *mut c_int, *mut c_int, c_uint) -> c_int,
        domain_xml_desc: unsafe extern "C" fn(Ptr, c_uint) -> *mut c_char,
        domain_security_label: unsafe extern "C" fn(Ptr, *mut VirSecurityLabel) -> c_int,
        node_security_model: unsafe extern "C" fn(Ptr, *mut VirSecurityModel) -> c_int,
        last_error_message: unsafe extern "C" fn() -> *const c_char,
        // Keeps the library mapped for the life of the process.
        _lib: libloading::Library,
    }

    /// libvirt's default error handler prints every error to stderr; ours
    /// does nothing, since every error is returned to the caller.
    unsafe extern "C" fn quiet(_: Ptr, _: Ptr) {}

    fn load() -> Result<Api, String> {
        let missing = |e: libloading::Error| {
            format!("libvirt is not installed (libvirt0): cannot list libvirt guests ({e})")
        };
        // SAFETY: loading libvirt runs its constructors, which only set up
        // its own state.
        let lib = unsafe { libloading::Library::new(LIBVIRT) }.map_err(missing)?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: each symbol is declared above with the C
                // signature of libvirt's public header; the pointer is
                // used only while `_lib` keeps the library loaded.
                *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(missing)?
            };
        }
        let set_error_func: unsafe extern "C" fn(Ptr, Option<ErrorFunc>) = sym!("virSetErrorFunc");
        // SAFETY: installs a handler that ignores its arguments.
        unsafe { set_error_func(std::ptr::null_mut(), Some(quiet)) };
        Ok(Api {
            open_read_only: sym!("virConnectOpenReadOnly"),
            close: sym!("virConnectClose"),
            list_all_domains: sym!("virConnectListAllDomains"),
            lookup_by_name: sym!("virDomainLookupByName"),
            lookup_by_uuid_string: sym!("virDomainLookupByUUIDString"),
            domain_free: sym!("virDomainFree"),
            domain_name: sym!("virDomainGetName"),
            domain_uuid_string: sym!("virDomainGetUUIDString"),
            domain_id: sym!("virDomainGetID"),
            domain_state: sym!("virDomainGetState"),
            domain_xml_desc: sym!("virDomainGetXMLDesc"),
            domain_security_label: sym!("virDomainGetSecurityLabel"),
            node_security_model: sym!("virNodeGetSecurityModel"),
            last_error_message: sym!("virGetLastErrorMessage"),
            _lib: lib,
        })
    }

    fn api() -> Result<&'static Api, String> {
        static API: OnceLock<Result<Api, String>> = OnceLock::new();
        API.get_or_init(load).as_ref().map_err(Clone::clone)
    }

    /// libvirt's message for the last failed call on this thread.
    fn last_error(api: &Api) -> String {
        // SAFETY: returns a pointer to a thread-local string (never NULL
        // per libvirt; checked anyway) valid until the next libvirt call.
        let p = unsafe { (api.last_error_message)() };
        if p.is_null() {
            return "unknown libvirt error".to_string();
        }
        // SAFETY: non-NULL, NUL-terminated.
        unsafe { CStr::from_ptr(p) }
            .to_string_lossy()
            .trim()
            .to_string()
    }

    /// Text of a NUL-terminated C buffer, bounded by the buffer's length
    /// even if libvirt wrote no NUL.
    fn buf_text(buf: &[c_char]) -> String {
        // SAFETY: c_char and u8 have the same size and alignment; the slice
        // bounds the read.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), buf.len()) };
        match CStr::from_bytes_until_nul(bytes) {
            Ok(s) => s.to_string_lossy().into_owned(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        }
    }

    /// A `virConnectPtr` we hold one reference to; released only by
    /// [`RawConn::close`] (the owner calls it exactly once).
    pub(super) struct RawConn {
        api: &'static Api,
        p: Ptr,
    }

    // SAFETY: libvirt connections may be used from any thread (libvirt is
    // thread-safe per connection since 0.6); the owner serialises use.
    unsafe impl Send for RawConn {}

    impl RawConn {
        /// `virConnectOpenReadOnly`.
        pub(super) fn open_read_only(uri: &CStr) -> Result<RawConn, String> {
            let api = api()?;
            // SAFETY: a valid C string; returns a new connection or NULL.
            let p = unsafe { (api.open_read_only)(uri.as_ptr()) };
            if p.is_null() {
                return Err(last_error(api));
            }
            Ok(RawConn { api, p })
        }

        /// `virConnectListAllDomains` (every domain, flags 0).
        pub(super) fn list_all_domains(&self) -> Result<Vec<RawDomain>, String> {
            let mut arr: *mut Ptr = std::ptr::null_mut();
            // SAFETY: a live connection; libvirt mallocs the array and
            // hands over one reference per domain.
            let n = unsafe { (self.api.list_all_domains)(self.p, &mut arr, 0) };
            if n < 0 {
                return Err(last_error(self.api));
            }
            let count = usize::try_from(n).unwrap_or(0);
            let mut out = Vec::with_capacity(count);
            if !arr.is_null() {
                for i in 0..count {
                    // SAFETY: the array holds `count` entries, each ours.
                    let p = unsafe { *arr.add(i) };
                    if !p.is_null() {
                        out.push(RawDomain { api: self.api, p });
                    }
                }
                // SAFETY: the array itself is malloc'ed and now empty of owners.
                unsafe { libc::free(arr.cast()) };
            }
            Ok(out)
        }

        /// `virDomainLookupByUUIDString` or `virDomainLookupByName`.
        pub(super) fn lookup(&self, key: &str, is_uuid: bool) -> Result<RawDomain, String> {
            let ckey = CString::new(key).map_err(|_| "the name contains a NUL byte".to_string())?;
            let f = if is_uuid {
                self.api.lookup_by_uuid_string
            } else {
                self.api.lookup_by_name
            };
            // SAFETY: a live connection and a valid C string; returns a new
            // domain reference or NULL.
            let p = unsafe { f(self.p, ckey.as_ptr()) };
            if p.is_null() {
                return Err(last_error(self.api));
            }
            Ok(RawDomain { api: self.api, p })
        }

        /// `virNodeGetSecurityModel` on a zeroed `virSecurityModel`.
        pub(super) fn security_model(&self) -> Result<SecurityModel, String> {
            let mut sm = VirSecurityModel {
                model: [0; MODEL_BUFLEN],
                doi: [0; DOI_BUFLEN],
            };
            // SAFETY: a live connection; `sm` is a writable, properly sized
            // virSecurityModel.
            if unsafe { (self.api.node_security_model)(self.p, &mut sm) } < 0 {
                return Err(last_error(self.api));
            }
            Ok(SecurityModel {
                model: buf_text(&sm.model),
                doi: buf_text(&sm.doi),
            })
        }

        /// `virConnectClose`.
        ///
        /// # Safety
        /// Called at most once, and the connection is not used afterwards.
        pub(super) unsafe fn close(&self) -> Result<(), String> {
            if (self.api.close)(self.p) < 0 {
                return Err(last_error(self.api));
            }
            Ok(())
        }
    }

    /// A `virDomainPtr` we hold one reference to, freed on drop.
    pub(super) struct RawDomain {
        api: &'static Api,
        p: Ptr,
    }

    impl Drop for RawDomain {
        fn drop(&mut self) {
            // SAFETY: we own exactly one reference.
            unsafe { (self.api.domain_free)(self.p) };
        }
    }

    impl RawDomain {
        /// `virDomainGetName`.
        pub(super) fn name(&self) -> Result<String, String> {
            // SAFETY: a live domain; the string belongs to it.
            let p = unsafe { (self.api.domain_name)(self.p) };
            if p.is_null() {
                return Err(last_error(self.api));
            }
            // SAFETY: non-NULL, NUL-terminated, alive with the domain.
            Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        }

        /// `virDomainGetUUIDString`.
        pub(super) fn uuid(&self) -> Result<Uuid, String> {
            let mut buf = [0 as c_char; UUID_STRING_BUFLEN];
            // SAFETY: a live domain; buf has VIR_UUID_STRING_BUFLEN bytes.
            if unsafe { (self.api.domain_uuid_string)(self.p, buf.as_mut_ptr()) } < 0 {
                return Err(last_error(self.api));
            }
            let s = buf_text(&buf);
            Uuid::parse_str(&s).map_err(|e| format!("libvirt returned a bad UUID {s:?}: {e}"))
        }

        /// `virDomainGetID`: `None` for an inactive domain.
        pub(super) fn id(&self) -> Option<u32> {
            // SAFETY: a live domain.
            let id = unsafe { (self.api.domain_id)(self.p) };
            (id != c_uint::MAX).then_some(id)
        }

        /// `virDomainGetState`: the state number.
        pub(super) fn state(&self) -> Result<i32, String> {
            let (mut state, mut reason) = (0, 0);
            // SAFETY: a live domain and two writable ints.
            if unsafe { (self.api.domain_state)(self.p, &mut state, &mut reason, 0) } < 0 {
                return Err(last_error(self.api));
            }
            Ok(state)
        }

        /// `virDomainGetXMLDesc` (flags 0).
        pub(super) fn xml_desc(&self) -> Result<String, String> {
            // SAFETY: a live domain; returns a malloc'ed string or NULL.
            let p = unsafe { (self.api.domain_xml_desc)(self.p, 0) };
            if p.is_null() {
                return Err(last_error(self.api));
            }
            // SAFETY: non-NULL, NUL-terminated, ours to free.
            let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
            // SAFETY: allocated by libvirt with malloc; freed once.
            unsafe { libc::free(p.cast()) };
            Ok(s)
        }

        /// `virDomainGetSecurityLabel` on a zeroed `virSecurityLabel`.
        pub(super) fn security_label(&self) -> Result<SecurityLabel, String> {
            let mut sl = VirSecurityLabel {
                label: [0; LABEL_BUFLEN],
                enforcing: 0,
            };
            // SAFETY: a live domain; `sl` is a properly sized, writable
            // virSecurityLabel.
            if unsafe { (self.api.domain_security_label)(self.p, &mut sl) } < 0 {
                return Err(last_error(self.api));
            }
            Ok(SecurityLabel {
                label: buf_text(&sl.label),
                enforcing: sl.enforcing == 1,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris() {
        assert!(is_local_uri("qemu:///system"));
        assert!(is_local_uri("qemu+unix:///system?socket=/x"));
        assert!(is_local_uri("test:///default"));
        assert!(is_local_uri("qemu://localhost/system"));
        assert!(!is_local_uri("qemu+ssh://root@host/system"));
        assert!(!is_local_uri("qemu+tls://host:16514/system"));
    }
}
