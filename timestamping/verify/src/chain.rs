//! Hash chain computation: aggregation chains, the calendar chain's root, and the times and
//! shapes the chains encode.
//!
//! Spec: Guardtime, "KSI Data Formats", sections "Hash chains", "Aggregation hash chain" and
//! "Calendar hash chain" (as implemented by guardtime/goksi `pdu/chain_link.go` and
//! `pdu/cal_chain.go`, guardtime/libksi `src/ksi/hashchain.c`).
//!
//! ```text
//!  aggregation step   level += level_correction + 1
//!    left link:       h = H_alg(h || sibling || level)        sibling = imprint, legacy id value
//!    right link:      h = H_alg(sibling || h || level)                  or metadata value
//!  calendar step      level byte is always 0xFF; H starts as the input's algorithm and becomes
//!                     the sibling's algorithm at each left link
//!  aggregation time   from the publication time P and the link sides, root first:
//!                     left: P = highbit(P) - 1;  right: t += highbit(P), P -= highbit(P)
//! ```

use crate::error::Error;
use crate::imprint::Imprint;
use crate::signature::{AggregationChain, CalendarChain, CalendarLink, Side};

/// Why a chain cannot be computed. Verification reports these as inconclusive (NA, GEN-02).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A level correction pushes the level past 255.
    #[error("aggregation chain level exceeds 255")]
    LevelOverflow,
    /// A hash function is unavailable or failed.
    #[error(transparent)]
    Hash(#[from] Error),
}

/// Computes an aggregation chain's root hash and the level it ends at, starting at `level`.
///
/// # Errors
///
/// [`ChainError::LevelOverflow`] past level 255, [`ChainError::Hash`] if hashing fails.
pub fn aggregate(
    chain: &AggregationChain,
    input: &Imprint,
    level: u8,
) -> Result<(Imprint, u8), ChainError> {
    let mut level = u64::from(level);
    let mut hash = input.clone();
    for link in &chain.links {
        level = level
            .checked_add(link.level_correction)
            .and_then(|l| l.checked_add(1))
            .filter(|l| *l <= 0xff)
            .ok_or(ChainError::LevelOverflow)?;
        let level_byte = [u8::try_from(level).map_err(|_| ChainError::LevelOverflow)?];
        let sibling = link.sibling.hashed_bytes();
        hash = match link.side {
            Side::Left => chain
                .algorithm
                .hash(&[hash.as_bytes(), sibling, &level_byte])?,
            Side::Right => chain
                .algorithm
                .hash(&[sibling, hash.as_bytes(), &level_byte])?,
        };
    }
    let level = u8::try_from(level).map_err(|_| ChainError::LevelOverflow)?;
    Ok((hash, level))
}

/// Computes the output of a list of aggregation chains, each starting where the previous one
/// ended. Does not compare inputs: see the INT-01 rule in [`crate::verify`].
///
/// # Errors
///
/// As for [`aggregate`].
pub fn aggregate_all(
    chains: &[AggregationChain],
    input: &Imprint,
) -> Result<(Imprint, u8), ChainError> {
    chains
        .iter()
        .try_fold((input.clone(), 0u8), |(hash, level), chain| {
            aggregate(chain, &hash, level)
        })
}

/// Computes a calendar chain's root hash.
///
/// # Errors
///
/// [`ChainError::Hash`] if hashing fails.
pub fn calendar_root(chain: &CalendarChain) -> Result<Imprint, ChainError> {
    let mut algorithm = chain.input_hash.algorithm();
    let mut hash = chain.input_hash.clone();
    for link in &chain.links {
        hash = match link.side {
            Side::Left => {
                algorithm = link.sibling.algorithm();
                algorithm.hash(&[hash.as_bytes(), link.sibling.as_bytes(), &[0xff]])?
            }
            Side::Right => algorithm.hash(&[link.sibling.as_bytes(), hash.as_bytes(), &[0xff]])?,
        };
    }
    Ok(hash)
}

/// The aggregation time implied by the chain's shape and publication time, or `None` if the
/// shape does not fit any calendar tree of that size.
pub fn calendar_aggregation_time(publication_time: u64, links: &[CalendarLink]) -> Option<u64> {
    let mut r = publication_time;
    let mut t = 0u64;
    for link in links.iter().rev() {
        if r == 0 {
            return None;
        }
        let high = high_bit(r);
        match link.side {
            Side::Left => r = high - 1,
            Side::Right => {
                t = t.checked_add(high)?;
                r -= high;
            }
        }
    }
    (r == 0).then_some(t)
}

/// The chain's shape as the KSI chain index encodes it: a leading 1 bit, then one bit per link
/// from the root down, 1 for a left link. `None` for more than 63 links.
pub fn aggregation_shape(chain: &AggregationChain) -> Option<u64> {
    if chain.links.len() > 63 {
        return None;
    }
    Some(chain.links.iter().rev().fold(1u64, |acc, link| {
        (acc << 1) | u64::from(link.side == Side::Left)
    }))
}

/// Whether two calendar chains have the same right links (siblings to their left), in order:
/// chains through the same leaf share them whatever their publication times.
pub fn right_links_match(a: &CalendarChain, b: &CalendarChain) -> bool {
    let rights = |c: &CalendarChain| -> Vec<Imprint> {
        c.links
            .iter()
            .filter(|l| l.side == Side::Right)
            .map(|l| l.sibling.clone())
            .collect()
    };
    rights(a) == rights(b)
}

/// The largest power of two not above `r` (`r` > 0).
fn high_bit(r: u64) -> u64 {
    1u64 << (63 - r.leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imprint::HashAlgorithm;

    fn link(side: Side) -> CalendarLink {
        CalendarLink {
            side,
            sibling: HashAlgorithm::Sha256.hash(&[b"x"]).unwrap(),
        }
    }

    #[test]
    fn high_bit_values() {
        assert_eq!(high_bit(1), 1);
        assert_eq!(high_bit(3), 2);
        assert_eq!(high_bit(4), 4);
        assert_eq!(high_bit(u64::MAX), 1 << 63);
    }

    #[test]
    fn calendar_time_from_shape() {
        // A tree over 4 leaves (t = 0..3, publication time 3): the leaf of t = 2 is reached by
        // right (root), then left.
        assert_eq!(
            calendar_aggregation_time(3, &[link(Side::Left), link(Side::Right)]),
            Some(2)
        );
        assert_eq!(
            calendar_aggregation_time(3, &[link(Side::Right), link(Side::Right)]),
            Some(3)
        );
        assert_eq!(calendar_aggregation_time(3, &[link(Side::Right)]), None);
        assert_eq!(calendar_aggregation_time(0, &[link(Side::Left)]), None);
    }
}
