//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: one call into each
//! decoder of untrusted bytes. Not part of the API.
//!
//! The two canonical-encoding checks panic on purpose: an input that decodes but does not encode
//! back to itself is a bug the fuzzer must report.
#![allow(clippy::panic)]

use crate::PublicKey;
use crate::batch::BatchSignature;
use crate::cert::verify_csr;
use crate::software::SoftwareSigner;

/// A batch signature (`docs/batch-format.md`): a value or an error; what is accepted encodes back
/// to the input.
pub fn batch_signature(data: &[u8]) {
    if let Ok(signature) = BatchSignature::from_bytes(data)
        && signature.to_bytes() != data
    {
        panic!("a batch signature decoded from bytes it does not encode to");
    }
}

/// A PKCS#10 request: one whose signature verifies, or an error.
pub fn csr(data: &[u8]) {
    let _ = verify_csr(data);
}

/// A PKCS#8 key file of the software key store: a signer or an error.
pub fn key_file(data: &[u8]) {
    let _ = SoftwareSigner::from_pkcs8("fuzz", data, None);
}

/// A SubjectPublicKeyInfo: a key or an error; only canonical DER is accepted.
pub fn public_key(data: &[u8]) {
    if let Ok(key) = PublicKey::from_spki_der(data)
        && key.spki_der() != data
    {
        panic!("a public key decoded from DER it does not encode to");
    }
}
