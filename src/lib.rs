//! aa-virt: sVirt-style AppArmor confinement for libvirt guests and LXC
//! containers.
//!
//! Data flows one way: input (domain XML, LXC config) → [`guest::Guest`] →
//! [`policy`] rules → profile text → [`store`] files → kernel ([`apparmor`]).

#![warn(missing_docs)]

pub mod apparmor;
pub mod boot;
pub mod canary;
pub mod config;
pub mod denials;
pub mod guest;
pub mod install;
#[cfg(test)]
mod layering;
pub mod libvirt;
pub mod list;
pub mod lxc;
pub mod policy;
pub mod reload;
pub mod store;
