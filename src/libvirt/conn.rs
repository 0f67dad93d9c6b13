//! A small safe layer over the `virt` crate: open a connection, list every
//! domain with its name, UUID, id and state, read a domain's XML or its
//! security label, and close the connection explicitly.
//!
//! Two things the `virt` crate does not do safely are done here:
//! - `virt::connect::Connect`'s `Drop` panics when `virConnectClose` fails;
//!   [`Conn`] keeps it in a `ManuallyDrop` and closes it itself, returning
//!   (or, on drop, logging) the error instead.
//! - There is no wrapper for `virDomainGetSecurityLabel` or
//!   `virNodeGetSecurityModel`; [`ffi`] holds the two calls, each on a
//!   fixed-size, zero-initialised buffer read back with a bounded length.

use std::mem::ManuallyDrop;
use std::sync::Once;

use serde::Serialize;
use uuid::Uuid;
use virt::connect::Connect;
use virt::domain::{Domain, DomainState as VirState};
use virt::enumutil::Enum;

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

    fn from_virt(s: &Enum<VirState, virt::sys::virDomainState>) -> DomainState {
        match s {
            Enum::Known(VirState::Running) => DomainState::Running,
            Enum::Known(VirState::Blocked) => DomainState::Blocked,
            Enum::Known(VirState::Paused) => DomainState::Paused,
            Enum::Known(VirState::Shutdown) => DomainState::Shutdown,
            Enum::Known(VirState::Shutoff) => DomainState::Shutoff,
            Enum::Known(VirState::Crashed) => DomainState::Crashed,
            Enum::Known(VirState::PMSuspended) => DomainState::PmSuspended,
            Enum::Known(VirState::NoState) | Enum::Unknown(_) => DomainState::NoState,
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

fn virt_message(e: &virt::error::Error) -> String {
    e.message().trim().to_string()
}

/// libvirt's default error handler prints every error to stderr; turn it
/// off once, since every error is returned to the caller.
fn quiet_libvirt() {
    static ONCE: Once = Once::new();
    ONCE.call_once(virt::error::clear_error_callback);
}

/// An open, read-only libvirt connection.
pub struct Conn {
    inner: ManuallyDrop<Connect>,
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
    /// Open `uri` read-only (listing needs nothing more).
    pub fn open(uri: &str) -> Result<Conn, ConnError> {
        quiet_libvirt();
        match Connect::open_read_only(Some(uri)) {
            Ok(c) => Ok(Conn {
                inner: ManuallyDrop::new(c),
                uri: uri.to_string(),
                closed: false,
            }),
            Err(e) => {
                let message = virt_message(&e);
                let no_daemon = message.contains("Failed to connect socket")
                    || message.contains("No such file or directory")
                    || message.contains("Connection refused");
                Err(ConnError::Connect {
                    uri: uri.to_string(),
                    message,
                    no_daemon,
                })
            }
        }
    }

    /// The URI this connection was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn dom_err(&self, domain: &str, what: &'static str, e: &virt::error::Error) -> ConnError {
        ConnError::Domain {
            uri: self.uri.clone(),
            domain: domain.to_string(),
            what,
            message: virt_message(e),
        }
    }

    /// Every domain (active and inactive), sorted by name. The state is
    /// only asked of active domains (an inactive one is shut off); the
    /// security label is asked of active ones when `labels` is set. A
    /// domain that disappears while we list is left out.
    pub fn domains(&self, labels: bool) -> Result<Vec<DomainInfo>, ConnError> {
        let doms = self
            .inner
            .list_all_domains(0)
            .map_err(|e| ConnError::List {
                uri: self.uri.clone(),
                message: virt_message(&e),
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
                    Ok((s, _)) => DomainState::from_virt(&s),
                    Err(_) => continue,
                },
            };
            let label = (labels && id.is_some()).then(|| {
                ffi::security_label(d).map_err(|e| {
                    self.dom_err(&name, "read the security label", &e)
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

    fn lookup(&self, name_or_uuid: &str) -> Result<Domain, ConnError> {
        let r = match Uuid::parse_str(name_or_uuid) {
            Ok(u) => self.inner.lookup_domain_by_uuid(u),
            Err(_) => self.inner.lookup_domain_by_name(name_or_uuid),
        };
        r.map_err(|e| self.dom_err(name_or_uuid, "find the domain", &e))
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
            .map_err(|e| self.dom_err(name_or_uuid, "read the name", &e))?;
        let uuid = d
            .uuid()
            .map_err(|e| self.dom_err(&name, "read the uuid", &e))?;
        let id = d.id();
        let state = match id {
            None => DomainState::Shutoff,
            Some(_) => DomainState::from_virt(
                &d.state()
                    .map_err(|e| self.dom_err(&name, "read the state", &e))?
                    .0,
            ),
        };
        let label = id.is_some().then(|| {
            ffi::security_label(&d).map_err(|e| {
                self.dom_err(&name, "read the security label", &e)
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
        d.xml_desc(0)
            .map_err(|e| self.dom_err(name_or_uuid, "read the domain XML", &e))
    }

    /// The host's primary security driver.
    pub fn security_model(&self) -> Result<SecurityModel, ConnError> {
        ffi::security_model(&self.inner).map_err(|e| ConnError::List {
            uri: self.uri.clone(),
            message: format!("cannot read the security model: {}", virt_message(&e)),
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
        ffi::close(&self.inner).map_err(|e| ConnError::Close {
            uri: self.uri.clone(),
            message: virt_message(&e),
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

/// The raw libvirt calls the `virt` crate has no safe wrapper for.
mod ffi {
    use std::ffi::{c_char, CStr};

    use virt::connect::Connect;
    use virt::domain::Domain;
    use virt::error::Error;
    use virt::sys;

    use super::{SecurityLabel, SecurityModel};

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

    /// `virDomainGetSecurityLabel` on a zeroed `virSecurityLabel`.
    pub(super) fn security_label(d: &Domain) -> Result<SecurityLabel, Error> {
        let mut sl = sys::virSecurityLabel {
            label: [0; sys::VIR_SECURITY_LABEL_BUFLEN as usize],
            enforcing: 0,
        };
        // SAFETY: `d` is a live domain handle for the whole call, and `sl`
        // is a properly sized, writable virSecurityLabel that libvirt fills
        // (at most VIR_SECURITY_LABEL_BUFLEN bytes including the NUL).
        let rc = unsafe { sys::virDomainGetSecurityLabel(d.as_ptr(), &mut sl) };
        if rc < 0 {
            return Err(Error::last_error());
        }
        Ok(SecurityLabel {
            label: buf_text(&sl.label),
            enforcing: sl.enforcing == 1,
        })
    }

    /// `virNodeGetSecurityModel` on a zeroed `virSecurityModel`.
    pub(super) fn security_model(c: &Connect) -> Result<SecurityModel, Error> {
        let mut sm = sys::virSecurityModel {
            model: [0; sys::VIR_SECURITY_MODEL_BUFLEN as usize],
            doi: [0; sys::VIR_SECURITY_DOI_BUFLEN as usize],
        };
        // SAFETY: `c` is a live connection; `sm` is a writable, properly
        // sized virSecurityModel.
        let rc = unsafe { sys::virNodeGetSecurityModel(c.as_ptr(), &mut sm) };
        if rc < 0 {
            return Err(Error::last_error());
        }
        Ok(SecurityModel {
            model: buf_text(&sm.model),
            doi: buf_text(&sm.doi),
        })
    }

    /// `virConnectClose` on a connection that is never used again (the
    /// caller holds it in a `ManuallyDrop` and marks it closed).
    pub(super) fn close(c: &Connect) -> Result<(), Error> {
        // SAFETY: the pointer is the live connection this wrapper owns one
        // reference to; it is released exactly once (the caller's `closed`
        // flag) and the `Connect` is never dropped (`ManuallyDrop`).
        let rc = unsafe { sys::virConnectClose(c.as_ptr()) };
        if rc < 0 {
            return Err(Error::last_error());
        }
        Ok(())
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
