//! PKCS#10 request intake on arbitrary bytes: a request whose signature verifies, or an error, never
//! a panic.
#![no_main]

use backbone_hsm::cert::verify_csr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = verify_csr(data);
});
