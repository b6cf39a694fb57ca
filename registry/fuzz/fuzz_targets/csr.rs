//! CSR intake (size limit, PKCS#10 parse, self-signature, subject checks) must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    backbone_registry::fuzzing::csr(data);
});
