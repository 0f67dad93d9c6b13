//! From a denial to a fix: AppArmor records ([`record`]) attributed to the
//! guest whose profile produced them, to the device whose rule covers the
//! path with fewer permissions, or to what would grant it ([`assess`]),
//! folded into one line per repeated denial ([`fold`]).

pub mod assess;
pub mod catalog;
pub mod fold;
pub mod record;
pub mod time;

pub use assess::{assess, Assessment};
pub use catalog::{Catalog, GuestEntry, GuestKey, Kind};
pub use fold::{fold, render_text, Denial, Filter};
