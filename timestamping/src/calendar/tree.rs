//! The calendar tree's arithmetic, pure: node hashes, the compact representation of empty
//! seconds, the frontier that appends leaves, and the audit paths that become calendar chains.
//!
//! Spec: the KSI calendar is a Merkle tree of the RFC 6962 shape (RFC 6962 §2.1: the left
//! subtree of `n` leaves holds the largest power of two smaller than `n`), over one leaf per
//! second since 1970, with KSI's calendar step `H(left || right || 0xFF)` (Guardtime, "KSI Data
//! Formats", "Calendar hash chain"; [`backbone_timestamping_verify::chain::calendar_root`]).
//!
//! ```text
//!  seconds  0 ........................ T0-1 | T0  T0+1 ... head
//!           all "empty": leaf E0            | round roots, or E0 for seconds without a round
//!  E0 = SHA-256("backbone/timestamping: no round in this second")
//!  Ek = H(Ek-1 || Ek-1 || 0xFF)   root of any perfect subtree of 2^k empty seconds, O(1) each
//! ```
//!
//! Because every empty second has the same leaf, the root of a perfect subtree with no round in
//! it is `E[level]`: the 1.8 billion seconds before the service's first round, and any stretch
//! without rounds, cost nothing to store and `O(log n)` hashes to cross.

use backbone_timestamping_verify::imprint::{HashAlgorithm, Imprint};
use backbone_timestamping_verify::signature::{CalendarLink, Side};

use crate::error::Error;

/// The bytes whose SHA-256 is the leaf of every second without a round. It does not start with
/// a KSI hash algorithm id followed by a digest, so no aggregation chain can end in its hash
/// without a SHA-256 preimage.
pub const EMPTY_LEAF_PREIMAGE: &[u8] = b"backbone/timestamping: no round in this second";

/// The calendar step's level byte, as KSI writes it.
const CALENDAR_LEVEL: [u8; 1] = [0xff];

/// A perfect subtree whose root the store must keep: `2^level` seconds from `index << level`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Height above the leaves; 0 is a leaf.
    pub level: u8,
    /// Position among the subtrees of this level.
    pub index: u64,
    /// The subtree's root.
    pub hash: Imprint,
}

/// The roots of the perfect subtrees that cover seconds `0..size`, largest first: the right
/// edge of the calendar tree, enough to append and to compute the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(level, root, holds a round)`, levels strictly decreasing.
    entries: Vec<(u8, Imprint, bool)>,
}

/// The hashes of empty subtrees, `E[0]` to `E[63]`.
#[derive(Clone, Debug)]
pub struct EmptyRoots {
    leaf: Imprint,
    roots: Vec<Imprint>,
}

/// `H(left || right || 0xFF)` with SHA-256.
///
/// # Errors
///
/// [`Error::Ksi`] if OpenSSL cannot hash.
pub fn node_hash(left: &Imprint, right: &Imprint) -> Result<Imprint, Error> {
    Ok(HashAlgorithm::Sha256.hash(&[left.as_bytes(), right.as_bytes(), &CALENDAR_LEVEL])?)
}

// === impl EmptyRoots ===

impl EmptyRoots {
    /// Computes `E[0]` to `E[63]`.
    ///
    /// # Errors
    ///
    /// [`Error::Ksi`] if OpenSSL cannot hash.
    pub fn new() -> Result<Self, Error> {
        let leaf = HashAlgorithm::Sha256.hash(&[EMPTY_LEAF_PREIMAGE])?;
        let mut roots = vec![leaf.clone()];
        let mut last = leaf.clone();
        while roots.len() < 64 {
            last = node_hash(&last, &last)?;
            roots.push(last.clone());
        }
        Ok(EmptyRoots { leaf, roots })
    }

    /// The root of `2^level` empty seconds.
    pub fn at(&self, level: u8) -> &Imprint {
        // `level` < 64 wherever a calendar of u64 seconds is walked.
        self.roots.get(usize::from(level)).unwrap_or(&self.leaf)
    }

    /// The leaf of a second without a round.
    pub fn leaf(&self) -> &Imprint {
        &self.leaf
    }
}

// === impl Frontier ===

impl Frontier {
    /// The frontier of a calendar of `size` seconds whose perfect subtree roots `node` gives
    /// (`Some` for a subtree holding a round, `None` for an empty one).
    ///
    /// # Errors
    ///
    /// Whatever `node` returns.
    pub fn rebuild(
        size: u64,
        empty: &EmptyRoots,
        mut node: impl FnMut(u8, u64) -> Result<Option<Imprint>, Error>,
    ) -> Result<Self, Error> {
        let mut entries = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            let width = 1u64 << level;
            if size & width == 0 {
                continue;
            }
            let (hash, full) = match node(level, start >> level)? {
                Some(hash) => (hash, true),
                None => (empty.at(level).clone(), false),
            };
            entries.push((level, hash, full));
            start += width;
        }
        Ok(Frontier { size, entries })
    }

    /// Seconds covered: `0..size`.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends empty seconds until `size == until`, then the leaf of second `until` (a round's
    /// root, or `None` for a second without a round). Returns the completed subtrees that hold
    /// a round, which the store must keep (the leaf itself included when it is a round).
    ///
    /// # Errors
    ///
    /// [`Error::History`] if `until` is before the end, [`Error::Ksi`] if hashing fails.
    pub fn append(
        &mut self,
        until: u64,
        leaf: Option<&Imprint>,
        empty: &EmptyRoots,
    ) -> Result<Vec<Node>, Error> {
        if until < self.size || until == u64::MAX {
            return Err(Error::History {
                time: until,
                size: self.size,
            });
        }
        let mut kept = Vec::new();
        while self.size < until {
            let aligned = if self.size == 0 {
                63
            } else {
                self.size.trailing_zeros()
            };
            let fits = 63 - (until - self.size).leading_zeros();
            let level = u8::try_from(aligned.min(fits)).map_err(|_| Error::Unreachable("level"))?;
            self.push(level, empty.at(level).clone(), false, &mut kept)?;
        }
        match leaf {
            Some(hash) => {
                kept.push(Node {
                    level: 0,
                    index: until,
                    hash: hash.clone(),
                });
                self.push(0, hash.clone(), true, &mut kept)?;
            }
            None => self.push(0, empty.leaf().clone(), false, &mut kept)?,
        }
        Ok(kept)
    }

    /// The calendar root over seconds `0..size`, `None` for an empty calendar.
    ///
    /// # Errors
    ///
    /// [`Error::Ksi`] if hashing fails.
    pub fn root(&self) -> Result<Option<Imprint>, Error> {
        let mut iter = self.entries.iter().rev();
        let Some((_, last, _)) = iter.next() else {
            return Ok(None);
        };
        let mut acc = last.clone();
        for (_, hash, _) in iter {
            acc = node_hash(hash, &acc)?;
        }
        Ok(Some(acc))
    }

    fn push(
        &mut self,
        level: u8,
        hash: Imprint,
        full: bool,
        kept: &mut Vec<Node>,
    ) -> Result<(), Error> {
        let width = 1u64
            .checked_shl(u32::from(level))
            .ok_or(Error::Unreachable("level above 63"))?;
        self.size = self
            .size
            .checked_add(width)
            .ok_or(Error::Unreachable("calendar past u64"))?;
        let (mut level, mut hash, mut full) = (level, hash, full);
        while let Some((top_level, _, _)) = self.entries.last()
            && *top_level == level
        {
            let (_, left, left_full) = self
                .entries
                .pop()
                .ok_or(Error::Unreachable("frontier entry vanished"))?;
            hash = node_hash(&left, &hash)?;
            full |= left_full;
            level += 1;
            if full {
                let index = (self.size - 1) >> level;
                kept.push(Node {
                    level,
                    index,
                    hash: hash.clone(),
                });
            }
        }
        self.entries.push((level, hash, full));
        Ok(())
    }
}

/// The root of seconds `lo..lo + n` (`n` > 0, `lo` aligned as in the calendar tree), from the
/// roots of its perfect subtrees.
///
/// # Errors
///
/// Whatever `node` returns, and hashing errors.
pub fn range_root(
    lo: u64,
    n: u64,
    node: &mut impl FnMut(u8, u64) -> Result<Imprint, Error>,
) -> Result<Imprint, Error> {
    if n.is_power_of_two() {
        let level = level_of(n)?;
        return node(level, lo >> level);
    }
    let k = split(n);
    let left = node(level_of(k)?, lo >> level_of(k)?)?;
    let right = range_root(lo + k, n - k, node)?;
    node_hash(&left, &right)
}

/// The calendar chain's links for second `time` in the tree over seconds `0..n`, from the leaf
/// up (RFC 6962 §2.1.1 audit path, with KSI's sides: `Left` when the running hash is the left
/// child).
///
/// # Errors
///
/// [`Error::NotInCalendar`] if `time >= n`, and whatever `node` returns.
pub fn path(
    time: u64,
    n: u64,
    node: &mut impl FnMut(u8, u64) -> Result<Imprint, Error>,
) -> Result<Vec<CalendarLink>, Error> {
    if time >= n {
        return Err(Error::NotInCalendar { time, size: n });
    }
    let mut links = Vec::new();
    walk(time, 0, n, node, &mut links)?;
    Ok(links)
}

fn walk(
    time: u64,
    lo: u64,
    n: u64,
    node: &mut impl FnMut(u8, u64) -> Result<Imprint, Error>,
    links: &mut Vec<CalendarLink>,
) -> Result<(), Error> {
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if time < lo + k {
        walk(time, lo, k, node, links)?;
        let sibling = range_root(lo + k, n - k, node)?;
        links.push(CalendarLink {
            side: Side::Left,
            sibling,
        });
    } else {
        walk(time, lo + k, n - k, node, links)?;
        let level = level_of(k)?;
        links.push(CalendarLink {
            side: Side::Right,
            sibling: node(level, lo >> level)?,
        });
    }
    Ok(())
}

/// The largest power of two smaller than `n` (`n` > 1).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

fn level_of(width: u64) -> Result<u8, Error> {
    u8::try_from(width.trailing_zeros()).map_err(|_| Error::Unreachable("level of a power of two"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 6962 root computed naively over explicit leaves.
    fn naive_root(leaves: &[Imprint]) -> Imprint {
        if leaves.len() == 1 {
            return leaves[0].clone();
        }
        let k = usize::try_from(split(leaves.len() as u64)).unwrap();
        node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..])).unwrap()
    }

    fn leaf(i: u64) -> Imprint {
        HashAlgorithm::Sha256.hash(&[&i.to_be_bytes()]).unwrap()
    }

    #[test]
    fn frontier_root_matches_naive_tree_with_gaps() {
        let empty = EmptyRoots::new().unwrap();
        let rounds = [3u64, 4, 9, 10, 11, 17, 31, 32, 33];
        let mut frontier = Frontier::default();
        let mut leaves = Vec::new();
        let mut kept = Vec::new();
        for &t in &rounds {
            while (leaves.len() as u64) < t {
                leaves.push(empty.leaf().clone());
            }
            leaves.push(leaf(t));
            kept.extend(frontier.append(t, Some(&leaf(t)), &empty).unwrap());
            assert_eq!(
                frontier.root().unwrap().unwrap(),
                naive_root(&leaves),
                "after {t}"
            );
        }
        // Every kept node is the naive root of its range, and rebuilding from them agrees.
        for node in &kept {
            let lo = usize::try_from(node.index << node.level).unwrap();
            let hi = lo + (1usize << node.level);
            assert_eq!(node.hash, naive_root(&leaves[lo..hi]));
        }
        let lookup = |level: u8, index: u64| {
            Ok(kept
                .iter()
                .find(|n| n.level == level && n.index == index)
                .map(|n| n.hash.clone()))
        };
        let rebuilt = Frontier::rebuild(frontier.size(), &empty, lookup).unwrap();
        assert_eq!(rebuilt, frontier);
    }

    #[test]
    fn paths_hash_to_the_root_and_encode_the_time() {
        let empty = EmptyRoots::new().unwrap();
        let leaves: Vec<Imprint> = (0..37)
            .map(|i| {
                if i % 3 == 0 {
                    leaf(i)
                } else {
                    empty.leaf().clone()
                }
            })
            .collect();
        for n in 1..=leaves.len() as u64 {
            let root = naive_root(&leaves[..n as usize]);
            for t in 0..n {
                let mut node = |level: u8, index: u64| {
                    let lo = usize::try_from(index << level).unwrap();
                    Ok(naive_root(&leaves[lo..lo + (1usize << level)]))
                };
                let links = path(t, n, &mut node).unwrap();
                let chain = backbone_timestamping_verify::signature::CalendarChain {
                    publication_time: n - 1,
                    aggregation_time: Some(t),
                    input_hash: leaves[t as usize].clone(),
                    links: links.clone(),
                    unknown: vec![],
                };
                if !links.is_empty() {
                    assert_eq!(
                        backbone_timestamping_verify::chain::calendar_root(&chain).unwrap(),
                        root
                    );
                    assert_eq!(
                        backbone_timestamping_verify::chain::calendar_aggregation_time(
                            n - 1,
                            &links
                        ),
                        Some(t)
                    );
                }
            }
        }
    }

    #[test]
    fn crossing_1970_to_now_is_cheap() {
        let empty = EmptyRoots::new().unwrap();
        let mut frontier = Frontier::default();
        let kept = frontier
            .append(1_764_000_000, Some(&leaf(1)), &empty)
            .unwrap();
        assert_eq!(frontier.size(), 1_764_000_001);
        assert_eq!(kept.len(), 1, "only the leaf holds a round");
        assert!(frontier.append(1_764_000_000, None, &empty).is_err());
    }
}
