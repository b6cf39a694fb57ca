#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| backbone_timestamping::tsa::fuzzing::timestamp_req(data));
