//! Aggregation hash chains (0x801) and their links: sibling hash, legacy client id, metadata.
//!
//! Spec: Guardtime, "KSI Data Formats", sections "Aggregation hash chain", "Hash chain links",
//! "Metadata" and "Legacy client identifier" (as implemented by guardtime/goksi `pdu/pdu.go`,
//! `pdu/metadata.go`, `pdu/legacy_id.go`).
//!
//! ```text
//!  0x801 aggregation chain
//!    0x02 aggregation time   0x03 chain index (1..n)   0x04 input data?   0x05 input hash
//!    0x06 aggregation algorithm
//!    0x07 left link | 0x08 right link (1..n)
//!      0x01 level correction?   and exactly one of
//!      0x02 sibling hash | 0x03 legacy client id | 0x04 metadata
//!                                                   0x1E padding? (first, N+F) 0x01 client id
//!                                                   0x02 machine id? 0x03 sequence? 0x04 time?
//! ```

use crate::error::{DecodeError, Error};
use crate::imprint::{HashAlgorithm, Imprint};
use crate::tlv::{self, Encoder, Flags, KsiString, Tlv, TlvRef};

/// The tag of an aggregation hash chain.
pub const TAG_AGGREGATION_CHAIN: u16 = 0x801;
/// The tag of a left link: the chain's running hash is the left child.
pub const TAG_LEFT_LINK: u16 = 0x07;
/// The tag of a right link: the chain's running hash is the right child.
pub const TAG_RIGHT_LINK: u16 = 0x08;
/// The tag of metadata inside a link.
pub const TAG_METADATA: u16 = 0x04;
/// The tag of metadata padding.
pub const TAG_PADDING: u16 = 0x1e;

/// Links in one aggregation chain: each link raises the one-byte level by at least one.
pub const MAX_LINKS: usize = 255;
/// Entries in a chain index: one bit path per aggregator layer; 64 layers is far beyond any
/// deployed hierarchy.
pub const MAX_CHAIN_INDEX: usize = 64;
/// The length of a legacy client id value.
pub const LEGACY_ID_LEN: usize = 29;

const TAG_TIME: u16 = 0x02;
const TAG_INDEX: u16 = 0x03;
const TAG_INPUT_DATA: u16 = 0x04;
const TAG_INPUT_HASH: u16 = 0x05;
const TAG_ALGORITHM: u16 = 0x06;
const TAG_LEVEL_CORRECTION: u16 = 0x01;
const TAG_SIBLING_HASH: u16 = 0x02;
const TAG_LEGACY_ID: u16 = 0x03;
const TAG_CLIENT_ID: u16 = 0x01;
const TAG_MACHINE_ID: u16 = 0x02;
const TAG_SEQUENCE: u16 = 0x03;
const TAG_REQUEST_TIME: u16 = 0x04;

/// Which child of its parent the chain's running hash is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Left link (0x07): `hash(running || sibling || level)`.
    Left,
    /// Right link (0x08): `hash(sibling || running || level)`.
    Right,
}

impl Side {
    /// The link tag for this side.
    pub fn tag(self) -> u16 {
        match self {
            Side::Left => TAG_LEFT_LINK,
            Side::Right => TAG_RIGHT_LINK,
        }
    }

    pub(crate) fn from_tag(tag: u16) -> Option<Side> {
        match tag {
            TAG_LEFT_LINK => Some(Side::Left),
            TAG_RIGHT_LINK => Some(Side::Right),
            _ => None,
        }
    }
}

/// A hash chain from a client's hash up to the root of one aggregator's round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregationChain {
    /// Completion time of the aggregation round, seconds since 1970.
    pub aggregation_time: u64,
    /// The bit paths from the roots of the aggregation trees down to this chain's input.
    pub chain_index: Vec<u64>,
    /// Optional input data whose hash is the input hash.
    pub input_data: Option<Vec<u8>>,
    /// The hash the chain starts from.
    pub input_hash: Imprint,
    /// The hash function of every step.
    pub algorithm: HashAlgorithm,
    /// The links, from the input upwards.
    pub links: Vec<AggregationLink>,
    /// Unknown non-critical elements, kept for re-encoding.
    pub unknown: Vec<Tlv>,
}

/// One step of an aggregation chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregationLink {
    /// Which side the running hash is on.
    pub side: Side,
    /// Extra levels skipped by an unbalanced tree.
    pub level_correction: u64,
    /// What the running hash is combined with.
    pub sibling: Sibling,
    /// Unknown non-critical elements, kept for re-encoding.
    pub unknown: Vec<Tlv>,
}

/// The sibling data of an aggregation link: exactly one of three kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sibling {
    /// A hash from the sibling subtree.
    Hash(Imprint),
    /// A client id converted from a legacy signature.
    LegacyId(LegacyId),
    /// Client identity and request details embedded in the chain.
    Metadata(Metadata),
}

impl Sibling {
    /// The bytes hashed for this sibling: imprint, legacy id value or metadata value.
    pub fn hashed_bytes(&self) -> &[u8] {
        match self {
            Sibling::Hash(imprint) => imprint.as_bytes(),
            Sibling::LegacyId(id) => id.as_bytes(),
            Sibling::Metadata(metadata) => metadata.raw(),
        }
    }
}

/// A legacy client id: `03 00 len name 00..`, 29 bytes in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyId {
    raw: Vec<u8>,
}

impl LegacyId {
    /// Encodes `name` (at most 25 bytes) as a legacy client id.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if the name is longer than 25 bytes.
    pub fn new(name: &[u8]) -> Result<Self, Error> {
        let len = u8::try_from(name.len()).ok().filter(|l| *l <= 25);
        let len = len.ok_or(Error::Encode {
            what: "legacy client id",
            why: "name longer than 25 bytes",
        })?;
        let mut raw = vec![0x03, 0x00, len];
        raw.extend_from_slice(name);
        raw.resize(LEGACY_ID_LEN, 0);
        Ok(LegacyId { raw })
    }

    fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        let value = tlv.value();
        let invalid = |why| DecodeError::Invalid {
            tag: TAG_LEGACY_ID,
            why,
        };
        if value.len() != LEGACY_ID_LEN {
            return Err(invalid("legacy client id is not 29 bytes"));
        }
        let (header, rest) = value.split_at(2);
        if header != [0x03, 0x00] {
            return Err(invalid("legacy client id does not start with 03 00"));
        }
        let (len, rest) = rest
            .split_first()
            .ok_or(invalid("legacy client id too short"))?;
        let len = usize::from(*len);
        if len > 25 {
            return Err(invalid("legacy client id name longer than 25 bytes"));
        }
        let padding = rest.get(len..).unwrap_or_default();
        if padding.iter().any(|b| *b != 0) {
            return Err(invalid("legacy client id padding is not zero"));
        }
        Ok(LegacyId {
            raw: value.to_vec(),
        })
    }

    /// The embedded client name.
    pub fn name(&self) -> &[u8] {
        let len = self.raw.get(2).map_or(0, |l| usize::from(*l));
        self.raw.get(3..3 + len).unwrap_or_default()
    }

    /// The 29 value bytes, as hashed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }
}

/// Metadata embedded in an aggregation link.
///
/// The value bytes are kept exactly as read because they are what the chain hashes; the typed
/// fields are read from them. The padding facts are kept for the INT-11 rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// The client's identity.
    pub client_id: KsiString,
    /// The machine within the client that asked.
    pub machine_id: Option<KsiString>,
    /// The machine's local sequence number of the request.
    pub sequence_number: Option<u64>,
    /// When the server received the request, as precisely as it can tell.
    pub request_time: Option<u64>,
    /// Padding elements at the front, as read: (value, flags, written as TLV16).
    pub padding: Vec<(Vec<u8>, Flags, bool)>,
    /// Unknown non-critical elements.
    pub unknown: Vec<Tlv>,
    raw: Vec<u8>,
}

impl Metadata {
    /// Builds metadata with the padding that makes its length even, so that it can never be
    /// read as an imprint.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] for oversized strings.
    pub fn new(
        client_id: KsiString,
        machine_id: Option<KsiString>,
        sequence_number: Option<u64>,
        request_time: Option<u64>,
    ) -> Result<Self, Error> {
        let mut body = Encoder::new();
        body.string(TAG_CLIENT_ID, &client_id)?;
        if let Some(m) = &machine_id {
            body.string(TAG_MACHINE_ID, m)?;
        }
        if let Some(n) = sequence_number {
            body.u64(TAG_SEQUENCE, n)?;
        }
        if let Some(t) = request_time {
            body.u64(TAG_REQUEST_TIME, t)?;
        }
        let body = body.finish();
        // A one-byte padding element is three bytes, a two-byte one four: pick the even total.
        let pad: &[u8] = if body.len().is_multiple_of(2) {
            &[0x01, 0x01]
        } else {
            &[0x01]
        };
        let mut out = Encoder::new();
        out.element(TAG_PADDING, Flags::NON_CRITICAL_FORWARD, pad)?;
        out.raw(&body);
        let padding = vec![(pad.to_vec(), Flags::NON_CRITICAL_FORWARD, false)];
        let raw = out.finish();
        Ok(Metadata {
            client_id,
            machine_id,
            sequence_number,
            request_time,
            padding,
            unknown: Vec::new(),
            raw,
        })
    }

    /// Decodes metadata from a 0x04 element. Padding may only lead the value.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for a missing client id, repeated fields, misplaced padding.
    pub fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        const P: u16 = TAG_METADATA;
        let (mut client_id, mut machine_id, mut sequence_number, mut request_time) =
            (None, None, None, None);
        let (mut padding, mut unknown) = (Vec::new(), Vec::new());
        for (position, child) in tlv.children().enumerate() {
            let child = child?;
            match child.tag() {
                TAG_PADDING if padding.len() == position => {
                    padding.push((child.value().to_vec(), child.flags(), child.is_tlv16()));
                }
                TAG_PADDING => {
                    return Err(DecodeError::Misplaced {
                        parent: P,
                        tag: TAG_PADDING,
                        place: "first",
                    });
                }
                TAG_CLIENT_ID => tlv::once(&mut client_id, P, TAG_CLIENT_ID, child.as_string()?)?,
                TAG_MACHINE_ID => {
                    tlv::once(&mut machine_id, P, TAG_MACHINE_ID, child.as_string()?)?
                }
                TAG_SEQUENCE => tlv::once(&mut sequence_number, P, TAG_SEQUENCE, child.as_u64()?)?,
                TAG_REQUEST_TIME => {
                    tlv::once(&mut request_time, P, TAG_REQUEST_TIME, child.as_u64()?)?
                }
                _ => tlv::unknown(P, &child, &mut unknown)?,
            }
        }
        Ok(Metadata {
            client_id: tlv::required(client_id, P, TAG_CLIENT_ID)?,
            machine_id,
            sequence_number,
            request_time,
            padding,
            unknown,
            raw: tlv.value().to_vec(),
        })
    }

    /// The value bytes, exactly as hashed.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

// === impl AggregationChain ===

impl AggregationChain {
    /// Decodes a 0x801 element.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for missing, repeated or malformed fields and unknown critical elements.
    pub fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        const P: u16 = TAG_AGGREGATION_CHAIN;
        tlv.expect_tag(P)?;
        let (mut time, mut input_data, mut input_hash, mut algorithm) = (None, None, None, None);
        let (mut chain_index, mut links, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
        for child in tlv.children() {
            let child = child?;
            match child.tag() {
                TAG_TIME => tlv::once(&mut time, P, TAG_TIME, child.as_u64()?)?,
                TAG_INDEX => tlv::push_limited(
                    &mut chain_index,
                    child.as_u64()?,
                    "chain index",
                    MAX_CHAIN_INDEX,
                )?,
                TAG_INPUT_DATA => {
                    tlv::once(&mut input_data, P, TAG_INPUT_DATA, child.value().to_vec())?
                }
                TAG_INPUT_HASH => {
                    tlv::once(&mut input_hash, P, TAG_INPUT_HASH, child.as_imprint()?)?
                }
                TAG_ALGORITHM => {
                    tlv::once(&mut algorithm, P, TAG_ALGORITHM, algorithm_of(&child)?)?
                }
                TAG_LEFT_LINK | TAG_RIGHT_LINK => {
                    tlv::push_limited(
                        &mut links,
                        AggregationLink::decode(&child)?,
                        "aggregation links",
                        MAX_LINKS,
                    )?;
                }
                _ => tlv::unknown(P, &child, &mut unknown)?,
            }
        }
        if chain_index.is_empty() {
            return Err(DecodeError::Missing {
                parent: P,
                tag: TAG_INDEX,
            });
        }
        if links.is_empty() {
            return Err(DecodeError::Missing {
                parent: P,
                tag: TAG_LEFT_LINK,
            });
        }
        Ok(AggregationChain {
            aggregation_time: tlv::required(time, P, TAG_TIME)?,
            chain_index,
            input_data,
            input_hash: tlv::required(input_hash, P, TAG_INPUT_HASH)?,
            algorithm: tlv::required(algorithm, P, TAG_ALGORITHM)?,
            links,
            unknown,
        })
    }

    /// Writes the chain as a 0x801 element.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] for an empty chain index or no links, or oversized parts.
    pub fn encode(&self, out: &mut Encoder) -> Result<(), Error> {
        if self.chain_index.is_empty() || self.links.is_empty() {
            return Err(Error::Encode {
                what: "aggregation chain",
                why: "chain index and links must not be empty",
            });
        }
        out.nested(TAG_AGGREGATION_CHAIN, Flags::NONE, |e| {
            e.u64(TAG_TIME, self.aggregation_time)?;
            self.chain_index
                .iter()
                .try_for_each(|i| e.u64(TAG_INDEX, *i))?;
            if let Some(data) = &self.input_data {
                e.element(TAG_INPUT_DATA, Flags::NONE, data)?;
            }
            e.imprint(TAG_INPUT_HASH, &self.input_hash)?;
            e.u64(TAG_ALGORITHM, u64::from(self.algorithm.id()))?;
            self.links.iter().try_for_each(|l| l.encode(e))?;
            e.tlvs(&self.unknown)
        })
    }
}

/// Reads a one-byte hash algorithm id.
pub(crate) fn algorithm_of(tlv: &TlvRef<'_>) -> Result<HashAlgorithm, DecodeError> {
    let id = tlv.as_u8()?;
    HashAlgorithm::from_id(id).ok_or(DecodeError::UnknownAlgorithm { id })
}

// === impl AggregationLink ===

impl AggregationLink {
    fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        let p = tlv.tag();
        let side = Side::from_tag(p).ok_or(DecodeError::UnexpectedTag {
            expected: TAG_LEFT_LINK,
            found: p,
        })?;
        let (mut level_correction, mut sibling, mut unknown) =
            (None, None::<(u16, Sibling)>, Vec::new());
        for child in tlv.children() {
            let child = child?;
            let tag = child.tag();
            let found = match tag {
                TAG_LEVEL_CORRECTION => {
                    tlv::once(&mut level_correction, p, tag, child.as_u64()?)?;
                    continue;
                }
                TAG_SIBLING_HASH => Sibling::Hash(child.as_imprint()?),
                TAG_LEGACY_ID => Sibling::LegacyId(LegacyId::decode(&child)?),
                TAG_METADATA => Sibling::Metadata(Metadata::decode(&child)?),
                _ => {
                    tlv::unknown(p, &child, &mut unknown)?;
                    continue;
                }
            };
            match &sibling {
                Some((first, _)) if *first == tag => {
                    return Err(DecodeError::Duplicate { parent: p, tag });
                }
                Some((first, _)) => {
                    return Err(DecodeError::Conflict {
                        parent: p,
                        first: *first,
                        second: tag,
                    });
                }
                None => sibling = Some((tag, found)),
            }
        }
        let (_, sibling) = sibling.ok_or(DecodeError::Missing {
            parent: p,
            tag: TAG_SIBLING_HASH,
        })?;
        Ok(AggregationLink {
            side,
            level_correction: level_correction.unwrap_or(0),
            sibling,
            unknown,
        })
    }

    fn encode(&self, out: &mut Encoder) -> Result<(), Error> {
        out.nested(self.side.tag(), Flags::NONE, |e| {
            if self.level_correction != 0 {
                e.u64(TAG_LEVEL_CORRECTION, self.level_correction)?;
            }
            match &self.sibling {
                Sibling::Hash(imprint) => e.imprint(TAG_SIBLING_HASH, imprint)?,
                Sibling::LegacyId(id) => e.element(TAG_LEGACY_ID, Flags::NONE, id.as_bytes())?,
                Sibling::Metadata(metadata) => {
                    e.element(TAG_METADATA, Flags::NONE, metadata.raw())?
                }
            }
            e.tlvs(&self.unknown)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_id_layout() {
        let id = LegacyId::new(b"Test").unwrap();
        assert_eq!(id.as_bytes().len(), LEGACY_ID_LEN);
        assert_eq!(
            &id.as_bytes()[..7],
            &[0x03, 0x00, 0x04, b'T', b'e', b's', b't']
        );
        assert_eq!(id.name(), b"Test");
        assert!(LegacyId::new(&[b'x'; 26]).is_err());
    }

    #[test]
    fn new_metadata_has_even_length_and_is_not_an_imprint() {
        for name in ["a", "ab", "abc", "anon"] {
            let m = Metadata::new(name.into(), Some("m".into()), Some(1), None).unwrap();
            assert_eq!(m.raw().len() % 2, 0);
            assert_eq!(m.raw()[0], 0x7e);
            let mut e = Encoder::new();
            e.element(TAG_METADATA, Flags::NONE, m.raw()).unwrap();
            let bytes = e.finish();
            let back = Metadata::decode(&tlv::decode(&bytes).unwrap()).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn padding_must_lead() {
        let bytes = [0x04, 0x07, 0x01, 0x02, b'a', 0x00, 0x7e, 0x01, 0x01];
        let err = Metadata::decode(&tlv::decode(&bytes).unwrap());
        assert!(matches!(err, Err(DecodeError::Misplaced { .. })));
    }
}
