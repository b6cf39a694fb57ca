//! The calendar hash chain (0x802): from a round's root to the calendar root at a publication.
//!
//! Spec: Guardtime, "KSI Data Formats", section "Calendar hash chain" (as implemented by
//! guardtime/goksi `pdu/cal_chain.go`).
//!
//! ```text
//!  0x802 calendar chain
//!    0x01 publication time   0x02 aggregation time? (defaults to the publication time)
//!    0x05 input hash         0x07 left link | 0x08 right link (1..n): a bare imprint each
//! ```

use crate::error::{DecodeError, Error};
use crate::imprint::Imprint;
use crate::signature::aggregation::{Side, TAG_LEFT_LINK};
use crate::tlv::{self, Encoder, Flags, Tlv, TlvRef};

/// The tag of a calendar hash chain.
pub const TAG_CALENDAR_CHAIN: u16 = 0x802;
/// Links in a calendar chain: the calendar tree over at most 2^64 seconds is at most 64 deep.
pub const MAX_CALENDAR_LINKS: usize = 64;

const TAG_PUBLICATION_TIME: u16 = 0x01;
const TAG_AGGREGATION_TIME: u16 = 0x02;
const TAG_INPUT_HASH: u16 = 0x05;

/// A hash chain through the calendar tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalendarChain {
    /// The time of the calendar root this chain ends in, seconds since 1970.
    pub publication_time: u64,
    /// The time of the leaf this chain starts from, if written; see [`CalendarChain::aggregation_time`].
    pub aggregation_time: Option<u64>,
    /// The round's root hash (the leaf).
    pub input_hash: Imprint,
    /// The links, from the leaf upwards.
    pub links: Vec<CalendarLink>,
    /// Unknown non-critical elements, kept for re-encoding.
    pub unknown: Vec<Tlv>,
}

/// One step of a calendar chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalendarLink {
    /// Which side the running hash is on.
    pub side: Side,
    /// The hash of the sibling subtree.
    pub sibling: Imprint,
}

impl CalendarChain {
    /// The aggregation time, defaulting to the publication time when not written.
    pub fn aggregation_time(&self) -> u64 {
        self.aggregation_time.unwrap_or(self.publication_time)
    }

    /// Decodes a 0x802 element.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for missing, repeated or malformed fields and unknown critical elements.
    pub fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        const P: u16 = TAG_CALENDAR_CHAIN;
        tlv.expect_tag(P)?;
        let (mut publication_time, mut aggregation_time, mut input_hash) = (None, None, None);
        let (mut links, mut unknown) = (Vec::new(), Vec::new());
        for child in tlv.children() {
            let child = child?;
            match (child.tag(), Side::from_tag(child.tag())) {
                (_, Some(side)) => {
                    let link = CalendarLink {
                        side,
                        sibling: child.as_imprint()?,
                    };
                    tlv::push_limited(&mut links, link, "calendar links", MAX_CALENDAR_LINKS)?;
                }
                (TAG_PUBLICATION_TIME, _) => {
                    tlv::once(
                        &mut publication_time,
                        P,
                        TAG_PUBLICATION_TIME,
                        child.as_u64()?,
                    )?;
                }
                (TAG_AGGREGATION_TIME, _) => {
                    tlv::once(
                        &mut aggregation_time,
                        P,
                        TAG_AGGREGATION_TIME,
                        child.as_u64()?,
                    )?;
                }
                (TAG_INPUT_HASH, _) => {
                    tlv::once(&mut input_hash, P, TAG_INPUT_HASH, child.as_imprint()?)?
                }
                _ => tlv::unknown(P, &child, &mut unknown)?,
            }
        }
        if links.is_empty() {
            return Err(DecodeError::Missing {
                parent: P,
                tag: TAG_LEFT_LINK,
            });
        }
        Ok(CalendarChain {
            publication_time: tlv::required(publication_time, P, TAG_PUBLICATION_TIME)?,
            aggregation_time,
            input_hash: tlv::required(input_hash, P, TAG_INPUT_HASH)?,
            links,
            unknown,
        })
    }

    /// Writes the chain as a 0x802 element.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if there are no links.
    pub fn encode(&self, out: &mut Encoder) -> Result<(), Error> {
        if self.links.is_empty() {
            return Err(Error::Encode {
                what: "calendar chain",
                why: "no links",
            });
        }
        out.nested(TAG_CALENDAR_CHAIN, Flags::NONE, |e| {
            e.u64(TAG_PUBLICATION_TIME, self.publication_time)?;
            if let Some(t) = self.aggregation_time {
                e.u64(TAG_AGGREGATION_TIME, t)?;
            }
            e.imprint(TAG_INPUT_HASH, &self.input_hash)?;
            self.links
                .iter()
                .try_for_each(|l| e.imprint(l.side.tag(), &l.sibling))?;
            e.tlvs(&self.unknown)
        })
    }
}
