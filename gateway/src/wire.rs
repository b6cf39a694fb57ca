//! The envelope gateways exchange over their TLS link: a signed descriptor, its batch signature,
//! then the body, in one HTTP/2 message body.
//!
//! ```text
//!  envelope = "BBX1" u32(descriptor length) descriptor u32(signature length) signature body
//! ```
//!
//! The descriptor is a request or response descriptor ([`crate::signed`]); the signature is a
//! [`backbone_hsm::BatchSignature`] over the descriptor's bytes; the body is everything after
//! the signature, bound by the descriptor's SHA-512 digest. A provider gateway that refuses a
//! request answers not with an envelope but with the protocol's error (`X-Road-Error` and the
//! JSON body), which the client gateway passes on.
//!
//! Decoding is by hand (six lines of framing); every length is checked against the limits and
//! the input before use, and it never panics (fuzz target `signed_message`).

use crate::signed::MAX_DESCRIPTOR_LEN;

/// The magic and version of an envelope.
pub const MAGIC: [u8; 4] = *b"BBX1";
/// The path the provider gateway answers exchanges on.
pub const EXCHANGE_PATH: &str = "/backbone/v1/exchange";
/// The content type of an envelope.
pub const CONTENT_TYPE: &str = "application/x-backbone-exchange";
/// The longest signature accepted: a batch signature with a 64-step path and an RSA-4096 root
/// signature is under 3 KiB.
pub const MAX_SIGNATURE_LEN: usize = 8 * 1024;

/// A decoded envelope, borrowing from the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The descriptor's bytes.
    pub descriptor: &'a [u8],
    /// The batch signature's bytes.
    pub signature: &'a [u8],
    /// The body.
    pub body: &'a [u8],
}

/// Why bytes are not an envelope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not starting with [`MAGIC`].
    #[error("not a version 1 exchange envelope")]
    Magic,
    /// Ends before a length or inside a field.
    #[error("the envelope ends inside its {0}")]
    Truncated(&'static str),
    /// A length over its limit.
    #[error("{field} of {len} bytes is over the limit of {limit}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

/// Encodes an envelope.
///
/// # Errors
///
/// [`EnvelopeError::TooLong`] when the descriptor or the signature is over its limit.
pub fn encode(descriptor: &[u8], signature: &[u8], body: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    check_len("descriptor", descriptor.len(), MAX_DESCRIPTOR_LEN)?;
    check_len("signature", signature.len(), MAX_SIGNATURE_LEN)?;
    let mut out = Vec::with_capacity(12 + descriptor.len() + signature.len() + body.len());
    out.extend_from_slice(&MAGIC);
    for field in [descriptor, signature] {
        // Both lengths were checked against limits far below u32::MAX.
        out.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(field);
    }
    out.extend_from_slice(body);
    Ok(out)
}

/// Decodes an envelope.
///
/// # Errors
///
/// [`EnvelopeError`] naming the field.
pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let rest = bytes.strip_prefix(&MAGIC).ok_or(EnvelopeError::Magic)?;
    let (descriptor, rest) = field(rest, "descriptor", MAX_DESCRIPTOR_LEN)?;
    let (signature, body) = field(rest, "signature", MAX_SIGNATURE_LEN)?;
    Ok(Envelope {
        descriptor,
        signature,
        body,
    })
}

fn field<'a>(
    bytes: &'a [u8],
    name: &'static str,
    limit: usize,
) -> Result<(&'a [u8], &'a [u8]), EnvelopeError> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or(EnvelopeError::Truncated(name))?;
    let len = u32::from_be_bytes(*len) as usize;
    check_len(name, len, limit)?;
    if rest.len() < len {
        return Err(EnvelopeError::Truncated(name));
    }
    Ok(rest.split_at(len))
}

fn check_len(field: &'static str, len: usize, limit: usize) -> Result<(), EnvelopeError> {
    if len > limit {
        return Err(EnvelopeError::TooLong { field, len, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_truncation_is_refused() {
        let bytes = encode(b"BBRQ-descriptor", b"signature", b"{\"body\":1}").unwrap();
        let envelope = decode(&bytes).unwrap();
        assert_eq!(
            envelope,
            Envelope {
                descriptor: b"BBRQ-descriptor",
                signature: b"signature",
                body: b"{\"body\":1}"
            }
        );
        let body_starts = bytes.len() - 10;
        for cut in 0..body_starts {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for cut in body_starts..=bytes.len() {
            assert_eq!(decode(&bytes[..cut]).unwrap().body.len(), cut - body_starts);
        }
    }

    #[test]
    fn over_long_lengths_are_refused_before_use() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(EnvelopeError::TooLong {
                field: "descriptor",
                ..
            })
        ));
        assert_eq!(decode(b"BBX2"), Err(EnvelopeError::Magic));
        assert!(encode(&vec![0; MAX_DESCRIPTOR_LEN + 1], b"", b"").is_err());
    }
}
