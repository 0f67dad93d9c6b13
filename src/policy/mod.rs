//! Policy: from a guest to AppArmor text. Escaping, path resolution and the
//! restricted-path list each live in exactly one place here.

pub mod abi;
pub mod allow;
pub mod escape;
pub mod explain;
pub mod files;
pub mod paths;
pub mod rules;
pub mod template;

pub use escape::{check_path, escape_bytes, escape_path, unescape, PathError, Pattern};
pub use rules::{derive, Rule, RuleError, RuleSet};
pub use template::{TemplateError, Templates};
