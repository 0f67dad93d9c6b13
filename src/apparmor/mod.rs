//! The AppArmor side: the parser, the kernel's securityfs, and labels.

pub mod kernel;
pub mod parser;

pub use kernel::{status, KernelStatus};
pub use parser::{Parser, ParserError};
