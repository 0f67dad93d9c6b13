//! libvirt's front ends against a fake kernel: the qemu hook (also under a
//! real libvirtd), the virt-aa-helper drop-in, installing a guest's profile,
//! failing closed, concurrency and crash safety.

#[path = "../common/mod.rs"]
mod common;

mod concurrency;
mod crash_safety;
mod fail_closed;
mod helper;
mod hook;
mod hook_libvirtd;
mod install;
