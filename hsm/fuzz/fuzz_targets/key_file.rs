//! The PKCS#8 key-file decoder of the software key store on arbitrary bytes: a signer or an error,
//! never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| backbone_hsm::fuzzing::key_file(data));
