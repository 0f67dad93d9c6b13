//! libvirt: domain XML to guest, image backing chains, and the front ends
//! libvirt drives (hook and drop-in helper).

pub mod conn;
pub mod domain;
pub mod helper;
pub mod helper_args;
pub mod hook;
pub mod image;
pub mod mode;
pub mod naming;
pub mod profile;
pub mod refresh;

pub use domain::{parse, read_input, DomainError, ReadOptions};
