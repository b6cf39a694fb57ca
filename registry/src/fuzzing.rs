//! Entry points for the fuzz targets in `registry/fuzz/`; not for other callers.

/// The signed envelope, then the document inside it, then the document decoder on raw bytes.
pub fn global_conf(data: &[u8]) {
    if let Ok(signed) = crate::SignedConf::decode(data) {
        let _ = crate::conf::parse_unverified(signed.document());
        let _ = signed.encode();
    }
    let _ = crate::conf::parse_unverified(data);
}

/// Certificate request intake.
pub fn csr(data: &[u8]) {
    let _ = crate::csr::intake(data);
}

/// The anchor file decoder.
pub fn anchor(data: &[u8]) {
    let _ = crate::anchor::Anchor::decode(data);
}

/// The admin API's operation decoder; what decodes is encoded again.
pub fn operation(data: &[u8]) {
    if let Ok(op) = serde_json::from_slice::<crate::operation::Operation>(data) {
        let _ = serde_json::to_vec(&op);
    }
}
