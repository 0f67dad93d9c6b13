//! The fuzz targets' shared property checks, taken from the test suite by
//! path so that both check exactly the same thing.

#[path = "../../tests/common/rulecheck.rs"]
#[allow(dead_code)]
pub mod rulecheck;

#[path = "../../tests/common/fuzzcheck.rs"]
#[allow(dead_code)]
pub mod fuzzcheck;
