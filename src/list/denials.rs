//! AppArmor audit records for `list`: the parser lives in
//! [`crate::denials::record`], shared with `aa-virt denials`.

pub use crate::denials::record::*;
