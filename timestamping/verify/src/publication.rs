//! Published data (a calendar root at a publication time) and publication strings.
//!
//! Spec: Guardtime, "KSI Data Formats", sections "Published data" and "Publication string"
//! (as implemented by guardtime/goksi `pdu/pub_data.go`).
//!
//! ```text
//!  published data (0x10): publication time (0x02, integer) + published hash (0x04, imprint)
//!
//!  publication string:  base32( time as 8 bytes BE || imprint || CRC-32 of the preceding )
//!                       grouped by dashes every 6 characters:
//!                       AAAAAA-CUVHKA-AAPGWQ-FXXC5H-WIDADY-ERNDH5-P24XVZ-NE3XVY-...
//! ```

use crate::error::{DecodeError, Error};
use crate::imprint::Imprint;
use crate::tlv::{self, Encoder, Flags, Tlv, TlvRef};

/// The tag of published data.
pub const TAG_PUBLICATION_DATA: u16 = 0x10;
const TAG_TIME: u16 = 0x02;
const TAG_HASH: u16 = 0x04;

/// The longest publication string accepted: a SHA-512 imprint gives 124 base32 characters and
/// 20 dashes; twice that leaves room for spaces and other groupings.
pub const MAX_PUBLICATION_STRING_LEN: usize = 300;

/// A calendar root hash and the time it was computed at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicationData {
    /// Publication time, seconds since 1970.
    pub time: u64,
    /// The calendar root hash at that time.
    pub hash: Imprint,
    /// Unknown non-critical elements, kept for re-encoding.
    pub unknown: Vec<Tlv>,
}

impl PublicationData {
    /// Published data for `hash` at `time`.
    pub fn new(time: u64, hash: Imprint) -> Self {
        PublicationData {
            time,
            hash,
            unknown: Vec::new(),
        }
    }

    /// Decodes published data from a 0x10 element.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for a wrong tag, a missing, repeated or malformed field.
    pub fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        tlv.expect_tag(TAG_PUBLICATION_DATA)?;
        let (mut time, mut hash, mut unknown) = (None, None, Vec::new());
        for child in tlv.children() {
            let child = child?;
            match child.tag() {
                TAG_TIME => tlv::once(&mut time, TAG_PUBLICATION_DATA, TAG_TIME, child.as_u64()?)?,
                TAG_HASH => tlv::once(
                    &mut hash,
                    TAG_PUBLICATION_DATA,
                    TAG_HASH,
                    child.as_imprint()?,
                )?,
                _ => tlv::unknown(TAG_PUBLICATION_DATA, &child, &mut unknown)?,
            }
        }
        Ok(PublicationData {
            time: tlv::required(time, TAG_PUBLICATION_DATA, TAG_TIME)?,
            hash: tlv::required(hash, TAG_PUBLICATION_DATA, TAG_HASH)?,
            unknown,
        })
    }

    /// Writes the published data as a 0x10 element with the given flags.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] only for oversized kept unknown elements.
    pub fn encode(&self, out: &mut Encoder, flags: Flags) -> Result<(), Error> {
        out.nested(TAG_PUBLICATION_DATA, flags, |e| {
            e.u64(TAG_TIME, self.time)?;
            e.imprint(TAG_HASH, &self.hash)?;
            e.tlvs(&self.unknown)
        })
    }

    /// The publication string: base32 with a CRC-32, dashes every six characters.
    pub fn to_publication_string(&self) -> String {
        let mut raw = Vec::with_capacity(8 + self.hash.as_bytes().len() + 4);
        raw.extend_from_slice(&self.time.to_be_bytes());
        raw.extend_from_slice(self.hash.as_bytes());
        let crc = crc32(&raw);
        raw.extend_from_slice(&crc.to_be_bytes());
        let text = base32_encode(&raw);
        let groups: Vec<String> = text
            .as_bytes()
            .chunks(6)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        groups.join("-")
    }

    /// Parses a publication string. Dashes are ignored; base32 padding is optional.
    ///
    /// # Errors
    ///
    /// [`DecodeError::PublicationString`] for bad characters, a bad length or a CRC mismatch,
    /// and the imprint errors of [`Imprint::from_bytes`].
    pub fn from_publication_string(text: &str) -> Result<Self, DecodeError> {
        if text.len() > MAX_PUBLICATION_STRING_LEN {
            return Err(DecodeError::TooLarge {
                what: "publication string",
                len: text.len(),
                max: MAX_PUBLICATION_STRING_LEN,
            });
        }
        let raw = base32_decode(text)?;
        if raw.len() < 8 + 1 + 4 {
            return Err(DecodeError::PublicationString("too short"));
        }
        let (body, crc) = raw.split_at(raw.len() - 4);
        if crc32(body).to_be_bytes() != crc {
            return Err(DecodeError::PublicationString("CRC-32 mismatch"));
        }
        let (time, imprint) = body.split_at(8);
        let time = time.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        Ok(PublicationData::new(time, Imprint::from_bytes(imprint)?))
    }
}

// === base32 (RFC 4648 alphabet) ===

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut block = [0u8; 5];
        block.iter_mut().zip(chunk).for_each(|(b, c)| *b = *c);
        let bits = block.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < chars {
                let index = (bits >> (35 - 5 * i)) & 0x1f;
                out.push(char::from(
                    ALPHABET.get(index as usize).copied().unwrap_or(b'A'),
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base32_decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'-' && *c != b'=') {
        let value = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .ok_or(DecodeError::PublicationString(
                "character outside the base32 alphabet",
            ))?;
        acc = (acc << 5) | value as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if acc != 0 {
        return Err(DecodeError::PublicationString(
            "non-zero bits after the last byte",
        ));
    }
    Ok(out)
}

// === CRC-32 (IEEE 802.3, as in zlib) ===

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_answer() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn base32_round_trip() {
        for n in 0..12 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base32_decode(&base32_encode(&bytes)).unwrap(), bytes);
        }
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI======");
    }

    #[test]
    fn publication_string_round_trip() {
        // From the KSI conformance pack: publication of 2015-01-05 00:00:00 UTC.
        let s =
            "AAAAAA-CUVHKA-AAPGWQ-FXXC5H-WIDADY-ERNDH5-P24XVZ-NE3XVY-WY26AQ-ZBNVFL-JTNF5F-QCRTOI";
        let p = PublicationData::from_publication_string(s).unwrap();
        assert_eq!(p.time, 1_420_416_000);
        assert_eq!(p.to_publication_string(), s);
        assert!(PublicationData::from_publication_string(&s.replace("QCRTOI", "QCRTOA")).is_err());
    }
}
