//! Commands end to end: `aa-virt install`/`uninstall`, `list` for libvirt
//! guests, and `reload`.

#[path = "../common/mod.rs"]
mod common;

mod denials;
mod install;
mod list;
mod reload;
