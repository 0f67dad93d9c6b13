//! Helpers for the device-family tests: a domain around some device XML.

use super::{parse, DomainError, ReadOptions};
use crate::guest::{Access, Guest, Resource, Scope};

/// The UUID every test domain has.
pub const UUID: &str = "12345678-1234-1234-1234-123456789abc";

/// A running domain (`id='7'`, name `vm1`) with `os` inside `<os>` and
/// `devices` inside `<devices>`, plus `extra` at domain level.
pub fn domain(os: &str, devices: &str, extra: &str) -> String {
    format!(
        "<domain type='kvm' id='7' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\
         <name>vm1</name><uuid>{UUID}</uuid>\
         <os><type arch='x86_64' machine='q35'>hvm</type>{os}</os>{extra}\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{devices}</devices></domain>"
    )
}

/// Parse a domain built by [`domain`] with default options.
pub fn guest(os: &str, devices: &str, extra: &str) -> Guest {
    try_guest(os, devices, extra, &ReadOptions::default()).expect("test domain parses")
}

/// Parse with options.
pub fn try_guest(
    os: &str,
    devices: &str,
    extra: &str,
    opts: &ReadOptions,
) -> Result<Guest, DomainError> {
    parse(&domain(os, devices, extra), opts)
}

/// Parse just some devices.
pub fn devs(devices: &str) -> Guest {
    guest("", devices, "")
}

/// A file resource, for comparisons.
pub fn f(path: &str, access: &str, origin: &str) -> Resource {
    Resource {
        path: path.into(),
        access: Access::parse(access).expect("valid access"),
        scope: Scope::File,
        origin: origin.into(),
    }
}

/// A tree resource, for comparisons.
pub fn t(path: &str, access: &str, origin: &str) -> Resource {
    Resource {
        scope: Scope::Tree,
        ..f(path, access, origin)
    }
}

/// The skipped devices as `(origin, reason)` pairs.
pub fn skips(g: &Guest) -> Vec<(String, String)> {
    g.skipped
        .iter()
        .map(|s| (s.origin.clone(), s.reason.clone()))
        .collect()
}
