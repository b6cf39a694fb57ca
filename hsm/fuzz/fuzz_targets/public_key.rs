//! The SubjectPublicKeyInfo decoder on arbitrary bytes: a key or `Error::Decode`, never a panic; a
//! key it accepts re-encodes to the input (canonical DER only).
#![no_main]

use backbone_hsm::PublicKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = PublicKey::from_spki_der(data) {
        assert_eq!(key.spki_der(), data, "only canonical DER is accepted");
    }
});
