//! The SubjectPublicKeyInfo decoder on arbitrary bytes: a key or `Error::Decode`, never a panic; a
//! key it accepts re-encodes to the input (canonical DER only).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| backbone_hsm::fuzzing::public_key(data));
