//! PKCS#10 request intake on arbitrary bytes: a request whose signature verifies, or an error, never
//! a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| backbone_hsm::fuzzing::csr(data));
