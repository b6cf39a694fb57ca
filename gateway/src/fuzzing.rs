//! Entry points for the fuzz targets in `gateway/fuzz/` and the near-miss tests; not for other
//! callers.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The first line is a request target; each further line `name: value` is a header.
pub fn r1_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let _ = crate::r1::parse_target(lines.next().unwrap_or_default());
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    if let Ok(parsed) = crate::r1::parse_headers(&headers) {
        let _ = parsed.health_context();
    }
    let _ = crate::r1::end_to_end_headers(&headers);
}

/// Both descriptor decoders; what decodes must encode to the same bytes.
pub fn signed_message(data: &[u8]) {
    if let Ok(request) = crate::signed::RequestDescriptor::decode(data) {
        assert_eq!(
            request.encode().ok().as_deref(),
            Some(data),
            "request descriptors are canonical"
        );
    }
    if let Ok(response) = crate::signed::ResponseDescriptor::decode(data) {
        assert_eq!(
            response.encode().ok().as_deref(),
            Some(data),
            "response descriptors are canonical"
        );
    }
}

/// The exchange envelope as a provider or client gateway receives it: the envelope, then the
/// descriptor and the batch signature inside it; and a `findUsage` query.
pub fn envelope(data: &[u8]) {
    if let Ok(envelope) = crate::wire::decode(data) {
        let _ = crate::signed::RequestDescriptor::decode(envelope.descriptor);
        let _ = crate::signed::ResponseDescriptor::decode(envelope.descriptor);
        let _ = backbone_hsm::batch::BatchSignature::from_bytes(envelope.signature);
        let again = crate::wire::encode(envelope.descriptor, envelope.signature, envelope.body);
        assert_eq!(again.ok().as_deref(), Some(data), "envelopes are canonical");
    }
    let _ = crate::meta::usage_paging(Some(&String::from_utf8_lossy(data)));
}

/// An audit archive as `backbone audit verify` reads it: decoded without judging the digest, then
/// every check run (internal KSI policy); an archive whose digest matches encodes to the same bytes.
pub fn audit_archive(data: &[u8]) {
    use crate::log::archive::{Archive, check};
    if let Ok(unverified) = Archive::decode_unverified(data) {
        let options = check::Options {
            previous: None,
            ksi_policy: backbone_timestamping_verify::verify::Policy::Internal,
            ksi_context: backbone_timestamping_verify::verify::Context::default(),
        };
        let _ = check::check(&unverified, &options, &mut |_, _| {});
        if unverified.digest_matches {
            assert_eq!(
                unverified.archive.encode().ok().as_deref(),
                Some(data),
                "archives are canonical"
            );
        }
    }
}
