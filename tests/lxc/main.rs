//! LXC: enabling and disabling containers, their hooks and profiles, and
//! `aa-virt list` for containers.

#[path = "../common/mod.rs"]
mod common;

mod allow;
mod containers;
mod list;
mod unpriv;
