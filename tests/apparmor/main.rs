//! The AppArmor side: apparmor_parser flags and cache, and `aa-virt features`.

#[path = "../common/mod.rs"]
mod common;

mod features;
mod parser_cache;
mod parser_flags;
