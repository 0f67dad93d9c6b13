//! The AppArmor side: the parser, the kernel's securityfs, feature
//! detection, and labels.

#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod feature_set;
pub mod features;
pub mod kernel;
pub mod label;
pub mod load;
pub mod parser;
pub mod securityfs;

pub use features::{ContainerMode, Features};
pub use kernel::{select, Kernel, SystemKernel};
pub use label::{process_label, Label, LabelError};
pub use load::{install_profile, LoadError, LoadWhen, ProfileFile, ProfileInstalled};
pub use parser::{Parser, ParserError};
pub use securityfs::{status, KernelStatus, Mode, Root, SecurityfsError, SYSROOT_ENV};
