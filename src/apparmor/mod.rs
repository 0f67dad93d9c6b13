//! The AppArmor side: the parser, the kernel's securityfs, feature
//! detection, and labels.

pub mod features;
pub mod kernel;
pub mod label;
pub mod parser;
pub mod securityfs;

pub use features::{ContainerMode, Features};
pub use label::{process_label, Label, LabelError};
pub use parser::{Parser, ParserError};
pub use securityfs::{status, KernelStatus, Mode, Root, SecurityfsError, SYSROOT_ENV};
