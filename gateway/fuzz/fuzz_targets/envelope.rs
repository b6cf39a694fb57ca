//! The exchange envelope, the descriptor and batch signature inside it, and the findUsage query
//! must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    backbone_gateway::fuzzing::envelope(data);
});
