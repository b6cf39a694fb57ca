//! The batch signature decoder (`hsm/docs/batch-format.md`) on arbitrary bytes: it must return a
//! value or `Error::Decode`, never panic, and whatever it accepts must encode back to the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| backbone_hsm::fuzzing::batch_signature(data));
