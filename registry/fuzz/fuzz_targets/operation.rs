//! The admin API's operation decoder must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    backbone_registry::fuzzing::operation(data);
});
