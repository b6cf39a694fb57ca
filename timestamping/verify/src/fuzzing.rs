//! Entry points for the fuzz targets in `fuzz/`: one call into each decoder, errors ignored.
//!
//! Not part of the API; the targets only check that no input panics or hangs.

use crate::pdu::{AggregatorRequest, AggregatorResponse, ExtenderRequest, ExtenderResponse};
use crate::publication::PublicationData;
use crate::publications_file::PublicationsFile;
use crate::signature::Signature;
use crate::tlv;

/// Decodes one TLV element and walks everything nested in it.
pub fn tlv(data: &[u8]) {
    if let Ok(element) = tlv::decode(data) {
        let _ = element.walk(&mut |_, _| {});
    }
}

/// Decodes a signature and, if it decodes, re-encodes it and decodes that again.
pub fn signature(data: &[u8]) {
    if let Ok(signature) = Signature::decode(data)
        && let Ok(bytes) = signature.encode()
    {
        let _ = Signature::decode(&bytes);
    }
}

/// Decodes a publications file without checking its signature.
pub fn publications_file(data: &[u8]) {
    let _ = PublicationsFile::parse_unverified(data);
}

/// Decodes the input as each of the four PDU kinds.
pub fn pdu(data: &[u8]) {
    let _ = ExtenderResponse::decode(data);
    let _ = ExtenderRequest::decode(data);
    let _ = AggregatorResponse::decode(data);
    let _ = AggregatorRequest::decode(data);
}

/// Parses the input as a publication string.
pub fn publication_string(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(publication) = PublicationData::from_publication_string(text)
    {
        let _ = publication.to_publication_string();
    }
}
