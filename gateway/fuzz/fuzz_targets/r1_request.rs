//! The r1 request target and header parsers must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    backbone_gateway::fuzzing::r1_request(data);
});
