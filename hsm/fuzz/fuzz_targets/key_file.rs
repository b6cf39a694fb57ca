//! The PKCS#8 key-file decoder of the software key store on arbitrary bytes: a signer or an error,
//! never a panic.
#![no_main]

use backbone_hsm::software::SoftwareSigner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SoftwareSigner::from_pkcs8("fuzz", data, None);
});
