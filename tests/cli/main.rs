//! Commands end to end: `aa-virt install`/`uninstall`, `list` for libvirt
//! guests, `reload`, the upgrade canary `check` and `boot-load`.

#[path = "../common/mod.rs"]
mod common;

mod boot_load;
mod canary;
mod denials;
mod install;
mod install_packaged;
mod list;
mod reload;
mod vm_records;
