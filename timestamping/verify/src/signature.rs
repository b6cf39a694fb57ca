//! The KSI signature (0x800) as typed values, with canonical encoding.
//!
//! Spec: Guardtime, "KSI Data Formats", section "KSI signature" (as implemented by
//! guardtime/goksi `signature/signature.go` and guardtime/libksi `src/ksi/signature.c`).
//!
//! ```text
//!  0x800 signature
//!    0x806 RFC 3161 record?            converts a legacy time-stamp's hash into the chain input
//!    0x801 aggregation chain (1..n)    document hash -> round root, lowest aggregator first
//!    0x802 calendar chain?             round root -> calendar root
//!    0x805 calendar auth record? | 0x803 publication record?   (either needs 0x802, not both)
//! ```
//!
//! Decoding checks the structure only; whether the hashes add up is [`crate::verify`]'s job.
//! Aggregation chains are sorted by decreasing chain index length, the order they are hashed in.

use crate::error::{DecodeError, Error};
use crate::imprint::Imprint;
use crate::tlv::{self, Encoder, Flags, Tlv};

pub mod aggregation;
pub mod calendar;
pub mod records;

pub use aggregation::{AggregationChain, AggregationLink, LegacyId, Metadata, Sibling, Side};
pub use calendar::{CalendarChain, CalendarLink};
pub use records::{CalendarAuthRecord, PublicationRecord, Rfc3161Record, SignatureData};

use aggregation::TAG_AGGREGATION_CHAIN;
use calendar::TAG_CALENDAR_CHAIN;
use records::{TAG_CALENDAR_AUTH_RECORD, TAG_PUBLICATION_RECORD, TAG_RFC3161_RECORD};

/// The tag of a KSI signature.
pub const TAG_SIGNATURE: u16 = 0x800;
/// Aggregation chains in one signature: one per aggregator layer, and chain indexes have at
/// most [`aggregation::MAX_CHAIN_INDEX`] entries.
pub const MAX_AGGREGATION_CHAINS: usize = aggregation::MAX_CHAIN_INDEX;

/// The record that anchors the calendar chain, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// Only the calendar chain: verify with an extender.
    None,
    /// Signed by the calendar's key: verify with the publications file's certificates.
    CalendarAuth(CalendarAuthRecord),
    /// Published: verify with the publications file or a publication string.
    Publication(PublicationRecord),
}

/// A decoded KSI signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    rfc3161: Option<Rfc3161Record>,
    aggregation_chains: Vec<AggregationChain>,
    calendar: Option<(CalendarChain, Anchor)>,
    unknown: Vec<Tlv>,
}

impl Signature {
    /// Builds a signature from its parts, sorting the chains into hashing order.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if there is no aggregation chain.
    pub fn new(
        rfc3161: Option<Rfc3161Record>,
        mut aggregation_chains: Vec<AggregationChain>,
        calendar: Option<(CalendarChain, Anchor)>,
    ) -> Result<Self, Error> {
        if aggregation_chains.is_empty() {
            return Err(Error::Encode {
                what: "KSI signature",
                why: "no aggregation chain",
            });
        }
        sort_chains(&mut aggregation_chains);
        Ok(Signature {
            rfc3161,
            aggregation_chains,
            calendar,
            unknown: Vec::new(),
        })
    }

    /// Decodes a signature file: exactly one 0x800 element.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] with the structural problem found.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        decode_inner(bytes).map_err(Error::decode("KSI signature"))
    }

    /// Encodes the signature canonically.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if a part is too large for TLV.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out = Encoder::new();
        out.nested(TAG_SIGNATURE, Flags::NONE, |e| {
            if let Some(r) = &self.rfc3161 {
                r.encode(e)?;
            }
            self.aggregation_chains
                .iter()
                .try_for_each(|c| c.encode(e))?;
            if let Some((chain, anchor)) = &self.calendar {
                chain.encode(e)?;
                match anchor {
                    Anchor::None => {}
                    Anchor::CalendarAuth(record) => record.encode(e)?,
                    Anchor::Publication(record) => record.encode(e, TAG_PUBLICATION_RECORD)?,
                }
            }
            e.tlvs(&self.unknown)
        })?;
        Ok(out.finish())
    }

    /// The RFC 3161 record, for signatures converted from legacy time-stamps.
    pub fn rfc3161(&self) -> Option<&Rfc3161Record> {
        self.rfc3161.as_ref()
    }

    /// The aggregation chains in hashing order; never empty.
    pub fn aggregation_chains(&self) -> &[AggregationChain] {
        &self.aggregation_chains
    }

    /// The first aggregation chain (the one the document hash enters).
    pub fn first_chain(&self) -> Option<&AggregationChain> {
        self.aggregation_chains.first()
    }

    /// The calendar chain.
    pub fn calendar_chain(&self) -> Option<&CalendarChain> {
        self.calendar.as_ref().map(|(c, _)| c)
    }

    /// The calendar authentication record.
    pub fn calendar_auth_record(&self) -> Option<&CalendarAuthRecord> {
        match &self.calendar {
            Some((_, Anchor::CalendarAuth(r))) => Some(r),
            _ => None,
        }
    }

    /// The publication record.
    pub fn publication_record(&self) -> Option<&PublicationRecord> {
        match &self.calendar {
            Some((_, Anchor::Publication(r))) => Some(r),
            _ => None,
        }
    }

    /// The signed document's hash: the RFC 3161 record's input, else the first chain's.
    pub fn document_hash(&self) -> Option<&Imprint> {
        match &self.rfc3161 {
            Some(r) => Some(&r.input_hash),
            None => self.first_chain().map(|c| &c.input_hash),
        }
    }

    /// The signing time: the calendar chain's aggregation time, else the first chain's.
    pub fn signing_time(&self) -> u64 {
        match self.calendar_chain() {
            Some(c) => c.aggregation_time(),
            None => self.first_chain().map_or(0, |c| c.aggregation_time),
        }
    }

    /// Unknown non-critical top-level elements.
    pub fn unknown(&self) -> &[Tlv] {
        &self.unknown
    }
}

fn decode_inner(bytes: &[u8]) -> Result<Signature, DecodeError> {
    const P: u16 = TAG_SIGNATURE;
    let top = tlv::decode(bytes)?;
    top.expect_tag(P)?;
    let (mut rfc3161, mut calendar, mut auth, mut publication) = (None, None, None, None);
    let (mut chains, mut unknown) = (Vec::new(), Vec::new());
    for child in top.children() {
        let child = child?;
        let tag = child.tag();
        match tag {
            TAG_AGGREGATION_CHAIN => tlv::push_limited(
                &mut chains,
                AggregationChain::decode(&child)?,
                "aggregation chains",
                MAX_AGGREGATION_CHAINS,
            )?,
            TAG_CALENDAR_CHAIN => tlv::once(&mut calendar, P, tag, CalendarChain::decode(&child)?)?,
            TAG_CALENDAR_AUTH_RECORD => {
                tlv::once(&mut auth, P, tag, CalendarAuthRecord::decode(&child)?)?
            }
            TAG_PUBLICATION_RECORD => {
                tlv::once(&mut publication, P, tag, PublicationRecord::decode(&child)?)?
            }
            TAG_RFC3161_RECORD => tlv::once(&mut rfc3161, P, tag, Rfc3161Record::decode(&child)?)?,
            _ => tlv::unknown(P, &child, &mut unknown)?,
        }
    }
    if chains.is_empty() {
        return Err(DecodeError::Missing {
            parent: P,
            tag: TAG_AGGREGATION_CHAIN,
        });
    }
    let anchor = match (auth, publication) {
        (Some(_), Some(_)) => {
            return Err(DecodeError::Conflict {
                parent: P,
                first: TAG_CALENDAR_AUTH_RECORD,
                second: TAG_PUBLICATION_RECORD,
            });
        }
        (Some(a), None) => Anchor::CalendarAuth(a),
        (None, Some(p)) => Anchor::Publication(p),
        (None, None) => Anchor::None,
    };
    let calendar = match (calendar, anchor) {
        (Some(chain), anchor) => Some((chain, anchor)),
        (None, Anchor::None) => None,
        (None, _) => {
            return Err(DecodeError::Missing {
                parent: P,
                tag: TAG_CALENDAR_CHAIN,
            });
        }
    };
    sort_chains(&mut chains);
    Ok(Signature {
        rfc3161,
        aggregation_chains: chains,
        calendar,
        unknown,
    })
}

/// Lowest aggregator first: the longest chain index is the one nearest the document.
fn sort_chains(chains: &mut [AggregationChain]) {
    chains.sort_by_key(|c| std::cmp::Reverse(c.chain_index.len()));
}
