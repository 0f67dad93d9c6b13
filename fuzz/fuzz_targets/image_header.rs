//! Image-header reader (qcow2, qcow, qed, vmdk): any bytes give a header or
//! a clear error, never a panic, with bounded allocation.
#![no_main]

use aa_virt_fuzz::fuzzcheck;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzcheck::image_header(data);
});
