//! The signed request and response descriptor decoders must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    backbone_gateway::fuzzing::signed_message(data);
});
