//! The AppArmor side: the parser, the kernel's securityfs, feature
//! detection, and labels.

pub mod abi;
pub mod cache;
pub mod digest;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod feature_set;
pub mod features;
pub mod freshness;
pub mod kernel;
pub mod label;
pub mod load;
pub mod parser;
pub mod securityfs;
pub mod userns_policy;

pub use features::{ContainerMode, Features};
pub use freshness::{freshness, Freshness};
pub use kernel::{Kernel, Replaced, SystemKernel};
pub use label::{process_label, Label, LabelError};
pub use load::{install_profile, LoadError, LoadWhen, ProfileFile, ProfileInstalled};
pub use parser::{Parser, ParserError};
pub use securityfs::{status, KernelStatus, Mode, Root, SecurityfsError, SYSROOT_ENV};

/// The kernel aa-virt talks to: `system` itself. A build with the
/// `test-util` feature (tests only; a release build has no such code)
/// answers with the recording fake instead when `system`'s securityfs
/// directory holds the fake's marker file, which a real securityfs cannot.
pub fn select(system: SystemKernel) -> Box<dyn Kernel + Send + Sync> {
    #[cfg(any(test, feature = "test-util"))]
    if let Some(fake) = fake::FakeKernel::detect(&system) {
        return Box::new(fake);
    }
    Box::new(system)
}
