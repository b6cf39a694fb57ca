//! The batch signature decoder (`hsm/docs/batch-format.md`) on arbitrary bytes: it must return a
//! value or `Error::Decode`, never panic, and whatever it accepts must encode back to the input.
#![no_main]

use backbone_hsm::batch::BatchSignature;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(signature) = BatchSignature::from_bytes(data) {
        assert_eq!(signature.to_bytes(), data, "the encoding is canonical");
    }
});
