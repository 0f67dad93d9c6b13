//! The raw libvirt calls, through `libvirt.so.0` loaded at run time.

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
