//! An aggregation round, pure: the hashes accepted during one round, and the Merkle tree built
//! over them when it closes, with each request's aggregation hash chain.
//!
//! Spec: Guardtime, "KSI Data Formats", "Aggregation hash chain" and "Metadata": a step is
//! `H(left || right || level)`, the level being one more than the higher child's, a link's
//! level correction making up the difference. Tree shape as RFC 6962 §2.1 (balanced, left
//! subtree the largest power of two).
//!
//! ```text
//!                          root (level = max(children) + 1)
//!                        /                                 \
//!        H(x1 || meta1 || L1+1)      ...            H(xn || metan || Ln+1)
//!         x1 at the client's level L1 (first link: level correction L1, metadata sibling)
//! ```
//!
//! Stage: a request *accepted* into a [`Round`] lives only in memory. If the process dies
//! before the round's leaf is committed to the calendar, the request is lost and its client,
//! which has had no answer, must ask again.

use backbone_timestamping_verify::chain;
use backbone_timestamping_verify::imprint::{AlgorithmStatus, HashAlgorithm, Imprint};
use backbone_timestamping_verify::signature::{AggregationChain, AggregationLink, Metadata, Sibling, Side};
use backbone_timestamping_verify::tlv::KsiString;

use crate::error::Error;

/// The highest input level a client may claim unless configured otherwise: a client's own
/// aggregation tree of up to 2^32 hashes. With [`DEFAULT_MAX_ROUND_REQUESTS`] the round root
/// stays at level 53 or below, far from KSI's one-byte limit of 255.
pub const DEFAULT_MAX_INPUT_LEVEL: u8 = 32;
/// Requests in one round unless configured otherwise: 2^20, about 20 times the 50,000 requests
/// per second the service is sized for; a full round pushes back (503) instead of growing.
pub const DEFAULT_MAX_ROUND_REQUESTS: usize = 1 << 20;
/// The aggregation hash function.
pub const ALGORITHM: HashAlgorithm = HashAlgorithm::Sha256;

/// One client's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The hash to sign, or the root of the client's own aggregation tree.
    pub hash: Imprint,
    /// The level of `hash` in the client's tree (0 for a document hash).
    pub level: u8,
    /// Who asked; embedded in the chain as metadata.
    pub client_id: KsiString,
}

/// Limits of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The highest input level accepted.
    pub max_input_level: u8,
    /// Requests in one round.
    pub max_requests: usize,
}

/// The requests of an open round.
#[derive(Debug)]
pub struct Round {
    limits: Limits,
    requests: Vec<Request>,
}

/// A closed round: its root and one aggregation chain per request, in the order accepted.
#[derive(Debug)]
pub struct ClosedRound {
    /// The round time: the calendar second its root becomes the leaf of.
    pub time: u64,
    /// The round root; `None` for a round without requests.
    pub root: Option<Imprint>,
    /// The aggregation chain of each request, in the order the requests were accepted.
    pub chains: Vec<AggregationChain>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_input_level: DEFAULT_MAX_INPUT_LEVEL, max_requests: DEFAULT_MAX_ROUND_REQUESTS }
    }
}

// === impl Round ===

impl Round {
    /// An empty round.
    pub fn new(limits: Limits) -> Self {
        Round { limits, requests: Vec::new() }
    }

    /// Requests accepted so far.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether no request was accepted.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Checks a request without accepting it; `at` is the current time, for the hash
    /// function's deprecation date.
    ///
    /// # Errors
    ///
    /// [`Error::Request`] for a level above the limit or a hash function not trusted at `at`.
    pub fn check(limits: &Limits, request: &Request, at: u64) -> Result<(), Error> {
        if request.level > limits.max_input_level {
            return Err(Error::Request(format!(
                "input level {} is above the limit of {}",
                request.level, limits.max_input_level
            )));
        }
        let algorithm = request.hash.algorithm();
        if algorithm.status_at(i64::try_from(at).unwrap_or(i64::MAX)) != AlgorithmStatus::Normal {
            return Err(Error::Request(format!("hash function {algorithm} is deprecated")));
        }
        Ok(())
    }

    /// Accepts a request and returns its position in the round.
    ///
    /// # Errors
    ///
    /// As [`Round::check`], and [`Error::Pushback`] when the round is full.
    pub fn push(&mut self, request: Request, at: u64) -> Result<usize, Error> {
        Round::check(&self.limits, &request, at)?;
        if self.requests.len() >= self.limits.max_requests {
            return Err(Error::Pushback { round: at, pending: self.requests.len() });
        }
        self.requests.push(request);
        Ok(self.requests.len() - 1)
    }

    /// Closes the round as second `time` and builds its tree.
    ///
    /// # Errors
    ///
    /// [`Error::Ksi`] if hashing or metadata encoding fails.
    pub fn close(self, time: u64) -> Result<ClosedRound, Error> {
        let n = self.requests.len();
        if n == 0 {
            return Ok(ClosedRound { time, root: None, chains: Vec::new() });
        }
        let mut chains = Vec::with_capacity(n);
        let mut nodes = Vec::with_capacity(n);
        for request in self.requests {
            let metadata = Metadata::new(request.client_id, None, None, None)?;
            let level = request.level.checked_add(1).ok_or(Error::Unreachable("input level 255 passed the check"))?;
            let hash = ALGORITHM.hash(&[request.hash.as_bytes(), metadata.raw(), &[level]])?;
            chains.push(AggregationChain {
                aggregation_time: time,
                chain_index: Vec::new(),
                input_data: None,
                input_hash: request.hash,
                algorithm: ALGORITHM,
                links: vec![AggregationLink {
                    side: Side::Left,
                    level_correction: u64::from(request.level),
                    sibling: Sibling::Metadata(metadata),
                    unknown: Vec::new(),
                }],
                unknown: Vec::new(),
            });
            nodes.push((hash, level));
        }
        let (root, _) = build(&nodes, 0, &mut chains)?;
        for chain in &mut chains {
            let shape = chain::aggregation_shape(chain)
                .ok_or(Error::Unreachable("round tree deeper than 63 links"))?;
            chain.chain_index = vec![shape];
        }
        Ok(ClosedRound { time, root: Some(root), chains })
    }
}

/// Builds the tree over `nodes` (which start at request `offset`), appends each request's
/// links, and returns the subtree's root and level.
fn build(
    nodes: &[(Imprint, u8)],
    offset: usize,
    chains: &mut [AggregationChain],
) -> Result<(Imprint, u8), Error> {
    if let [(hash, level)] = nodes {
        return Ok((hash.clone(), *level));
    }
    let k = split(nodes.len());
    let (left_nodes, right_nodes) = nodes.split_at(k);
    let (left, left_level) = build(left_nodes, offset, chains)?;
    let (right, right_level) = build(right_nodes, offset + k, chains)?;
    let level = left_level.max(right_level).checked_add(1).ok_or(Error::Unreachable("round level above 255"))?;
    let hash = ALGORITHM.hash(&[left.as_bytes(), right.as_bytes(), &[level]])?;
    let link = |side, sibling: &Imprint, child_level: u8| AggregationLink {
        side,
        level_correction: u64::from(level - child_level - 1),
        sibling: Sibling::Hash(sibling.clone()),
        unknown: Vec::new(),
    };
    let span = chains.get_mut(offset..offset + nodes.len()).ok_or(Error::Unreachable("round span"))?;
    let (left_chains, right_chains) = span.split_at_mut(k);
    left_chains.iter_mut().for_each(|c| c.links.push(link(Side::Left, &right, left_level)));
    right_chains.iter_mut().for_each(|c| c.links.push(link(Side::Right, &left, right_level)));
    Ok((hash, level))
}

/// The largest power of two smaller than `n` (`n` > 1).
fn split(n: usize) -> usize {
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(i: u32, level: u8) -> Request {
        Request { hash: ALGORITHM.hash(&[&i.to_be_bytes()]).unwrap(), level, client_id: "anon".into() }
    }

    #[test]
    fn every_chain_ends_in_the_root() {
        for n in [1u32, 2, 3, 5, 8, 13] {
            let mut round = Round::new(Limits::default());
            for i in 0..n {
                round.push(request(i, (i % 3) as u8), 0).unwrap();
            }
            let closed = round.close(1_764_115_200).unwrap();
            let root = closed.root.clone().unwrap();
            for (i, chain_) in closed.chains.iter().enumerate() {
                let (out, _) = chain::aggregate(chain_, &chain_.input_hash, 0).unwrap();
                assert_eq!(out, root, "n {n} request {i}");
                assert_eq!(chain_.chain_index, vec![chain::aggregation_shape(chain_).unwrap()]);
            }
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits { max_input_level: 2, max_requests: 1 };
        let mut round = Round::new(limits);
        assert!(matches!(round.push(request(0, 3), 0), Err(Error::Request(_))));
        round.push(request(0, 2), 0).unwrap();
        assert!(matches!(round.push(request(1, 0), 0), Err(Error::Pushback { .. })));
        let sha1 = Request { hash: HashAlgorithm::Sha1.hash(&[b"x"]).unwrap(), level: 0, client_id: "a".into() };
        assert!(Round::check(&limits, &sha1, 1_764_115_200).is_err());
        assert!(Round::new(limits).close(5).unwrap().root.is_none());
    }
}
