//! The signed envelope and the document decoder must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    backbone_registry::fuzzing::global_conf(data);
});
