//! The audit archive decoder and its verifier must never panic on hostile bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    backbone_gateway::fuzzing::audit_archive(data);
});
