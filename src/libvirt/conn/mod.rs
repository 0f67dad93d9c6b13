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

mod ffi;

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
