//! An aggregation round, pure: the hashes accepted during one round, the Merkle tree built over
//! them when it closes, and each request's aggregation hash chain read out of that tree when the
//! request is answered.
//!
//! Spec: Guardtime, "KSI Data Formats", "Aggregation hash chain" and "Metadata": a step is
//! `H(left || right || level)`, the level being one more than the higher child's, a link's
//! level correction making up the difference. Tree shape as RFC 6962 §2.1 (balanced, left
//! subtree the largest power of two), built here layer by layer: adjacent nodes are paired and
//! an odd last node is carried up unchanged, which gives the same tree.
//!
//! ```text
//!                          root (level = max(children) + 1)
//!                        /                                 \
//!        H(x1 || meta1 || L1+1)      ...            H(xn || metan || Ln+1)
//!         x1 at the client's level L1 (first link: level correction L1, metadata sibling)
//! ```
//!
//! Only the tree's hashes are computed during the round, and most of them while it fills: every
//! 64 requests, their leaf hashes and every inner node whose two children are then complete (the
//! left subtrees), in one pass while those children are still in the cache; closing the round
//! hashes the last few requests and finishes the right edge, at most one node per layer. The
//! tree is one flat array of 32-byte digests and one of levels per layer; no per-leaf
//! allocation, no TLV. A request carries its hash inline ([`InputHash`]), and the round copies
//! its imprint into one flat array of imprint bytes, so that accepting a request follows no
//! pointer and frees nothing. Each client's metadata is encoded once per round, and which client sent a request is kept
//! per run of requests from the same client, not per request.
//! [`ClosedRound::chain`] builds one request's chain (a few dozen small allocations) when that
//! request is answered, on the answering task, so that the chains of a large round are built in
//! parallel and never all at once.
//!
//! Stage: a request *accepted* into a [`Round`] lives only in memory. If the process dies
//! before the round's leaf is committed to the calendar, the request is lost and its client,
//! which has had no answer, must ask again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use backbone_timestamping_verify::chain;
use backbone_timestamping_verify::imprint::{AlgorithmStatus, HashAlgorithm, Imprint};
use backbone_timestamping_verify::signature::aggregation::{TAG_AGGREGATION_CHAIN, TAG_METADATA};
use backbone_timestamping_verify::signature::records::TAG_PUBLICATION_RECORD;
use backbone_timestamping_verify::signature::{
    AggregationChain, AggregationLink, Anchor, CalendarChain, Metadata, Sibling, Side, Signature,
};
use backbone_timestamping_verify::tlv::{Encoder, Flags, KsiString};
use sha2::block_api::compress256;

use crate::error::Error;

/// One link of a chain above a leaf: the sibling's side, the level correction, the sibling.
type Link<'a> = (Side, u8, &'a [u8; 32]);

mod client_id;
mod input_hash;

pub use self::client_id::ClientId;
pub use self::input_hash::InputHash;

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
    /// The hash to sign, or the root of the client's own aggregation tree. Inline, so that a
    /// request is one block of memory and accepting it frees nothing.
    pub hash: InputHash,
    /// The level of `hash` in the client's tree (0 for a document hash).
    pub level: u8,
    /// Who asked; embedded in the chain as metadata. Inline when short, so that accepting a
    /// request neither frees a string nor updates a shared count.
    pub client_id: ClientId,
}

/// Limits of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The highest input level accepted.
    pub max_input_level: u8,
    /// Requests in one round.
    pub max_requests: usize,
}

/// The requests of an open round, each one's leaf hash and the complete left subtrees already
/// computed.
#[derive(Debug)]
pub struct Round {
    limits: Limits,
    leaves: Leaves,
    clients: Clients,
    /// The tree so far: layer 0 holds one node per request; every complete pair of nodes of a
    /// layer already has its parent in the layer above (so layer j + 1 holds ⌊len(j) / 2⌋).
    layers: Vec<Layer>,
    /// The leaf hash's input when it takes more than one block, reused.
    scratch: Vec<u8>,
    /// Requests accepted but not hashed yet (fewer than [`HASH_EVERY`]).
    pending: Vec<PendingLeaf>,
    /// Where the closed round's arrays go when it is dropped.
    recycler: Option<Recycler>,
}

/// A closed round: its tree, from which each request's aggregation chain is read on demand.
#[derive(Debug)]
pub struct ClosedRound {
    /// The round time: the calendar second its root becomes the leaf of (for a child
    /// aggregator, its own clock's second; the parent's time replaces it in the signatures).
    pub time: u64,
    leaves: Leaves,
    clients: Vec<Metadata>,
    /// Layer 0 holds one node per request, the last layer the root; empty without requests.
    layers: Vec<Layer>,
    /// Takes the arrays when the round is dropped.
    recycler: Option<Recycler>,
}

/// The arrays of a round that is done with (answered and dropped), kept for a later round.
///
/// A round of 65,536 requests fills about 6 MiB of arrays. Fresh from the allocator, that memory
/// comes from the operating system one zeroed 4 KiB page fault at a time, which took about a
/// sixth of the time of building such a round (`round` bench: 3.0 M leaves/s with fresh arrays,
/// 3.5 M without the faults). The service hands each round's arrays to the round after next:
/// one round fills while the one before is answered. One set is kept, and it is let go when it
/// is more than four times what the next round needs (after a burst).
#[derive(Clone, Debug, Default)]
pub struct Recycler {
    spare: Arc<Mutex<Option<Arrays>>>,
}

/// The arrays a [`Recycler`] keeps, emptied.
#[derive(Debug, Default)]
struct Arrays {
    leaves: Leaves,
    layers: Vec<Layer>,
}

/// A closed round with everything above its root: the chains of the aggregators above (none
/// when the round root went straight into the calendar), the calendar chain and its record.
/// Every request's signature is read out of it with [`SignedRound::signature`].
#[derive(Debug)]
pub struct SignedRound {
    round: ClosedRound,
    time: u64,
    above: Vec<AggregationChain>,
    calendar: (CalendarChain, Anchor),
    /// What every request's signature shares, encoded once: the chains above, the calendar
    /// chain and its record. `None` if they do not encode (cannot happen: each is far below
    /// the TLV size limit).
    shared: Option<Vec<u8>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_level: DEFAULT_MAX_INPUT_LEVEL,
            max_requests: DEFAULT_MAX_ROUND_REQUESTS,
        }
    }
}

/// The accepted requests: each one's hash, and which of the round's clients sent it. A
/// request's level is its leaf's level in the tree, less one.
#[derive(Debug, Default)]
struct Leaves {
    /// Requests accepted.
    len: usize,
    /// Every request's imprint, one after the other, in order (33 bytes per SHA-256 request:
    /// no per-request allocation, pointer or padding).
    imprints: Vec<u8>,
    /// `(first request, its first byte in imprints, imprint length)` for each run of
    /// consecutive requests whose imprints have one length (most rounds have one run), in
    /// order.
    widths: Vec<(usize, usize, usize)>,
    /// `(first request, client)` for each run of consecutive requests from one client (a PDU's
    /// requests come together), in order.
    runs: Vec<(usize, u32)>,
}

/// The distinct client ids of a round, each with its metadata encoded once.
#[derive(Debug, Default)]
struct Clients {
    metadata: Vec<Metadata>,
    /// For each client whose metadata fits, the padded SHA-256 block of a leaf over a SHA-256
    /// imprint, without the imprint, and where the level goes (see [`LeafBlock`]).
    blocks: Vec<Option<LeafBlock>>,
    ids: Vec<ClientId>,
    index: HashMap<ClientId, u32>,
    /// The last client interned: most requests in a row come from the same one.
    last: Option<u32>,
}

/// The one padded SHA-256 block of a leaf `imprint || metadata || level` over a SHA-256 imprint
/// (33 bytes) and a client's metadata of up to 21 bytes, made once per client and round: a
/// request's leaf is this block with its imprint and level written in, copies of fixed size.
#[derive(Clone, Copy, Debug)]
struct LeafBlock {
    block: [u8; 64],
    /// The level's byte, right after the metadata.
    level_at: usize,
}

/// A request accepted into a round and not hashed yet: where its imprint is in the round's
/// imprints, its client, and its leaf's level.
#[derive(Clone, Copy, Debug)]
struct PendingLeaf {
    start: usize,
    width: usize,
    client: u32,
    level: u8,
}

/// Requests accepted before their leaves and the nodes above them are hashed together.
const HASH_EVERY: usize = 64;

/// One layer of the tree: the SHA-256 digests of its nodes and their levels.
#[derive(Debug, Default)]
struct Layer {
    hashes: Vec<[u8; 32]>,
    levels: Vec<u8>,
}

// === impl Round ===

impl Round {
    /// An empty round.
    pub fn new(limits: Limits) -> Self {
        Round {
            limits,
            leaves: Leaves::default(),
            clients: Clients::default(),
            layers: Vec::new(),
            scratch: Vec::new(),
            pending: Vec::new(),
            recycler: None,
        }
    }

    /// An empty round with room for `requests` requests and their tree, so that it does not
    /// reallocate and copy its arrays as it fills: the service sizes each round from the one
    /// before (at most `limits.max_requests`).
    pub fn with_capacity(limits: Limits, requests: usize) -> Self {
        Round::sized(limits, requests, Arrays::default(), None)
    }

    /// Like [`Round::with_capacity`], in the arrays of an earlier round when `recycler` holds
    /// some, and handing its own arrays to `recycler` when it is closed and dropped.
    pub fn recycled(limits: Limits, requests: usize, recycler: &Recycler) -> Self {
        let arrays = recycler.take(requests.min(limits.max_requests));
        Round::sized(limits, requests, arrays, Some(recycler.clone()))
    }

    fn sized(limits: Limits, requests: usize, arrays: Arrays, recycler: Option<Recycler>) -> Self {
        let requests = requests.min(limits.max_requests);
        let depth = (usize::BITS - requests.leading_zeros()) as usize;
        let Arrays {
            mut leaves,
            mut layers,
        } = arrays;
        layers.resize_with(depth.max(layers.len()), Layer::default);
        for (d, layer) in layers.iter_mut().enumerate() {
            layer.hashes.clear();
            layer.levels.clear();
            let nodes = if d < depth { (requests >> d).max(1) } else { 0 };
            layer.hashes.reserve(nodes);
            layer.levels.reserve(nodes);
        }
        leaves.len = 0;
        leaves.imprints.clear();
        leaves
            .imprints
            .reserve(requests.saturating_mul(1 + ALGORITHM.digest_len()));
        leaves.widths.clear();
        leaves.runs.clear();
        Round {
            limits,
            leaves,
            clients: Clients::default(),
            layers,
            scratch: Vec::new(),
            pending: Vec::with_capacity(HASH_EVERY),
            recycler,
        }
    }

    /// Requests accepted so far.
    pub fn len(&self) -> usize {
        self.leaves.len
    }

    /// Whether no request was accepted.
    pub fn is_empty(&self) -> bool {
        self.leaves.len == 0
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
            return Err(Error::Request(format!(
                "hash function {algorithm} is deprecated"
            )));
        }
        Ok(())
    }

    /// Accepts a request, computes its leaf hash `H(hash || metadata || level + 1)` and the
    /// inner nodes it completes, and returns its position in the round.
    ///
    /// # Errors
    ///
    /// As [`Round::check`], [`Error::Pushback`] when the round is full, and [`Error::Ksi`] for a
    /// client id too long to encode as metadata.
    pub fn push(&mut self, request: &Request, at: u64) -> Result<usize, Error> {
        Round::check(&self.limits, request, at)?;
        let index = self.len();
        if index >= self.limits.max_requests {
            return Err(Error::Pushback {
                round: at,
                pending: index,
            });
        }
        let Some(level) = request.level.checked_add(1) else {
            return Err(Error::Unreachable("input level 255 passed the check"));
        };
        let client = self.clients.intern(&request.client_id)?;
        if self
            .leaves
            .runs
            .last()
            .is_none_or(|(_, last)| *last != client)
        {
            self.leaves.runs.push((index, client));
        }
        let start = self.leaves.imprints.len();
        self.leaves.push(index, request.hash.as_bytes());
        self.pending.push(PendingLeaf {
            start,
            width: request.hash.as_bytes().len(),
            client,
            level,
        });
        if self.pending.len() >= HASH_EVERY {
            self.hash_pending()?;
        }
        Ok(index)
    }

    /// Hashes the requests accepted since the last call: each one's leaf `H(hash || metadata ||
    /// level)`, then, layer by layer, the parent of every pair of nodes they complete. Done
    /// every [`HASH_EVERY`] requests, in tight loops over the round's arrays while the new
    /// entries are still in the cache, rather than leaf by leaf as each request comes (the
    /// bookkeeping between one leaf's hashes cost about a third of the round's time).
    fn hash_pending(&mut self) -> Result<(), Error> {
        let Round {
            leaves,
            clients,
            layers,
            pending,
            scratch,
            ..
        } = self;
        if pending.is_empty() {
            return Ok(());
        }
        if layers.is_empty() {
            layers.push(Layer::default());
        }
        let Some(bottom) = layers.first_mut() else {
            return Err(Error::Unreachable("round without its bottom layer"));
        };
        for leaf in pending.drain(..) {
            let Some(imprint) = leaf
                .start
                .checked_add(leaf.width)
                .and_then(|end| leaves.imprints.get(leaf.start..end))
            else {
                return Err(Error::Unreachable(
                    "pending request past the round's imprints",
                ));
            };
            let client = usize::try_from(leaf.client).ok();
            let template = client
                .and_then(|c| clients.blocks.get(c))
                .copied()
                .flatten();
            let quick = template
                .zip(<&[u8; 33]>::try_from(imprint).ok())
                .and_then(|(t, imprint)| t.leaf(imprint, leaf.level));
            let digest = match quick {
                Some(digest) => digest,
                None => {
                    let Some(metadata) = client.and_then(|c| clients.metadata.get(c)) else {
                        return Err(Error::Unreachable("request without its client's metadata"));
                    };
                    match one_block(imprint, metadata.raw(), leaf.level) {
                        Some(digest) => digest,
                        None => {
                            scratch.clear();
                            scratch.extend_from_slice(imprint);
                            scratch.extend_from_slice(metadata.raw());
                            scratch.push(leaf.level);
                            sha256(scratch)
                        }
                    }
                }
            };
            bottom.hashes.push(digest);
            bottom.levels.push(leaf.level);
        }
        for depth in 0..u8::MAX as usize {
            let (Some(below), above) = (layers.get(depth), layers.get(depth + 1)) else {
                return Err(Error::Unreachable("round layer missing"));
            };
            let done = above.map_or(0, |a| a.hashes.len());
            let complete = below.hashes.len() / 2;
            if complete <= done {
                // Nothing new here, so nothing new above either.
                return Ok(());
            }
            if layers.len() == depth + 1 {
                layers.push(Layer::default());
            }
            let (below, above) = layers.split_at_mut(depth + 1);
            let (Some(below), Some(above)) = (below.last(), above.first_mut()) else {
                return Err(Error::Unreachable("round layer without the layer above"));
            };
            let span = 2 * done..2 * complete;
            let (Some(hashes), Some(levels)) =
                (below.hashes.get(span.clone()), below.levels.get(span))
            else {
                return Err(Error::Unreachable(
                    "round layer with hashes and levels of different lengths",
                ));
            };
            for (pair, pair_levels) in hashes.chunks_exact(2).zip(levels.chunks_exact(2)) {
                let ([left, right], [left_level, right_level]) = (pair, pair_levels) else {
                    return Err(Error::Unreachable("a pair of nodes that is not two"));
                };
                let (digest, level) = parent(left, right, *left_level, *right_level)?;
                above.hashes.push(digest);
                above.levels.push(level);
            }
        }
        Err(Error::Unreachable("round tree deeper than 255 layers"))
    }

    /// Closes the round as second `time` and finishes its tree: the right edge, where a layer's
    /// odd last node is carried up or completes a pair, at most one SHA-256 computation per
    /// layer; the rest was hashed as the requests came.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`] if a level passes 255 (the limits keep it far below).
    pub fn close(mut self, time: u64) -> Result<ClosedRound, Error> {
        self.hash_pending()?;
        let Round {
            leaves,
            clients,
            mut layers,
            recycler,
            ..
        } = self;
        let mut depth = 0;
        while let Some(n) = layers.get(depth).map(|l| l.hashes.len()).filter(|n| *n > 1) {
            if layers.len() == depth + 1 {
                layers.push(Layer::default());
            }
            let (below, above) = layers.split_at_mut(depth + 1);
            let (Some(below), Some(above)) = (below.last(), above.first_mut()) else {
                return Err(Error::Unreachable("round layer without the layer above"));
            };
            if above.hashes.len() < n.div_ceil(2) {
                let (digest, level) = below.last_parent()?;
                above.hashes.push(digest);
                above.levels.push(level);
            }
            depth += 1;
        }
        // Layers reserved above the root stay empty: the root's layer is the last one. (They
        // are the smallest; a recycled round allocates them again.)
        let root = layers.get(depth).is_some_and(|l| !l.hashes.is_empty());
        layers.truncate(if root { depth + 1 } else { 0 });
        Ok(ClosedRound {
            time,
            leaves,
            clients: clients.metadata,
            layers,
            recycler,
        })
    }
}

// === impl Clients ===

impl Clients {
    /// The index of `client_id`'s metadata, encoding it on its first request in the round.
    fn intern(&mut self, client_id: &ClientId) -> Result<u32, Error> {
        if let Some(last) = self.last
            && usize::try_from(last)
                .ok()
                .and_then(|l| self.ids.get(l))
                .is_some_and(|id| same(id.as_bytes(), client_id.as_bytes()))
        {
            return Ok(last);
        }
        let index = match self.index.get(client_id) {
            Some(index) => *index,
            None => {
                let Ok(index) = u32::try_from(self.metadata.len()) else {
                    return Err(Error::Unreachable("more than 2^32 clients in a round"));
                };
                let metadata =
                    Metadata::new(KsiString(client_id.as_bytes().to_vec()), None, None, None)?;
                self.blocks.push(LeafBlock::new(metadata.raw()));
                self.metadata.push(metadata);
                self.ids.push(client_id.clone());
                self.index.insert(client_id.clone(), index);
                index
            }
        };
        self.last = Some(index);
        Ok(index)
    }
}

/// Whether two short byte strings are equal, compared inline (a client id is a few bytes; a
/// call to `memcmp` per request cost more than the comparison).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

// === impl LeafBlock ===

impl LeafBlock {
    /// The block for `metadata`, `None` when a leaf over a SHA-256 imprint and it takes two.
    fn new(metadata: &[u8]) -> Option<LeafBlock> {
        let level_at = 33 + metadata.len();
        let len = level_at + 1;
        if len > 55 {
            return None;
        }
        let mut block = [0u8; 64];
        block.get_mut(33..level_at)?.copy_from_slice(metadata);
        *block.get_mut(len)? = 0x80;
        block
            .get_mut(56..)?
            .copy_from_slice(&(len as u64 * 8).to_be_bytes());
        Some(LeafBlock { block, level_at })
    }

    /// The leaf hash over `imprint` at `level`.
    fn leaf(mut self, imprint: &[u8; 33], level: u8) -> Option<[u8; 32]> {
        let (head, _) = self.block.split_first_chunk_mut::<33>()?;
        *head = *imprint;
        *self.block.get_mut(self.level_at)? = level;
        let mut state = SHA256_IV;
        compress256(&mut state, std::slice::from_ref(&self.block));
        Some(digest(&state))
    }
}

// === impl Leaves ===

impl Leaves {
    /// Appends request `index`'s imprint.
    fn push(&mut self, index: usize, imprint: &[u8]) {
        if self
            .widths
            .last()
            .is_none_or(|(.., width)| *width != imprint.len())
        {
            self.widths
                .push((index, self.imprints.len(), imprint.len()));
        }
        // A SHA-256 imprint is copied as a fixed 33 bytes, not through a call to `memcpy`.
        match <&[u8; 33]>::try_from(imprint) {
            Ok(sha256) => self.imprints.extend_from_slice(sha256),
            Err(_) => self.imprints.extend_from_slice(imprint),
        }
        self.len += 1;
    }

    /// Request `index`'s imprint and the index of the client that sent it.
    fn get(&self, index: usize) -> Option<(&[u8], u32)> {
        if index >= self.len {
            return None;
        }
        let width = self
            .widths
            .partition_point(|(first, ..)| *first <= index)
            .checked_sub(1)?;
        let (first, start, width) = self.widths.get(width)?;
        let start = start.checked_add(index.checked_sub(*first)?.checked_mul(*width)?)?;
        let hash = self.imprints.get(start..start.checked_add(*width)?)?;
        let run = self
            .runs
            .partition_point(|(first, _)| *first <= index)
            .checked_sub(1)?;
        let (_, client) = self.runs.get(run)?;
        Some((hash, *client))
    }
}

// === impl Layer ===

impl Layer {
    /// The parent of this layer's last node: `H(left || right || level)` over the last pair when
    /// the layer has an even number of nodes, the last node carried up unchanged when odd.
    fn last_parent(&self) -> Result<([u8; 32], u8), Error> {
        if self.hashes.len() % 2 == 1 {
            return match (self.hashes.last(), self.levels.last()) {
                (Some(carried), Some(level)) => Ok((*carried, *level)),
                _ => Err(Error::Unreachable(
                    "round layer with hashes and levels of different lengths",
                )),
            };
        }
        match (self.hashes.as_slice(), self.levels.as_slice()) {
            ([.., left, right], [.., left_level, right_level]) => {
                parent(left, right, *left_level, *right_level)
            }
            _ => Err(Error::Unreachable(
                "round layer with hashes and levels of different lengths",
            )),
        }
    }
}

// === impl ClosedRound ===

impl ClosedRound {
    /// Requests in the round.
    pub fn len(&self) -> usize {
        self.leaves.len
    }

    /// Whether the round had no request.
    pub fn is_empty(&self) -> bool {
        self.leaves.len == 0
    }

    /// The round root; `None` for a round without requests.
    pub fn root(&self) -> Option<Imprint> {
        let digest = self.layers.last()?.hashes.first()?;
        Imprint::new(ALGORITHM, digest).ok()
    }

    /// The level of the round root: the height a parent aggregator is told.
    pub fn root_level(&self) -> Option<u8> {
        self.layers.last()?.levels.first().copied()
    }

    /// The aggregation chain of request `index` (in the order accepted), from its hash to the
    /// round root, with the round time and the chain index of this one tree.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`] for an index past the round.
    pub fn chain(&self, index: usize) -> Result<AggregationChain, Error> {
        let (hash, level, metadata) = self.leaf(index)?;
        let mut links = Vec::with_capacity(self.layers.len());
        links.push(AggregationLink {
            side: Side::Left,
            level_correction: u64::from(level),
            sibling: Sibling::Metadata(metadata.clone()),
            unknown: Vec::new(),
        });
        let mut position = index;
        for pair in self.layers.windows(2) {
            let [below, above] = pair else {
                return Err(Error::Unreachable("layer window"));
            };
            let sibling = below.hashes.get(position ^ 1);
            if let Some(sibling) = sibling {
                let level = below
                    .levels
                    .get(position)
                    .ok_or_else(|| Error::Unreachable("node without a level"))?;
                let parent = above
                    .levels
                    .get(position / 2)
                    .ok_or_else(|| Error::Unreachable("node without a parent"))?;
                let correction = parent.checked_sub(*level).and_then(|d| d.checked_sub(1));
                let correction = correction
                    .ok_or_else(|| Error::Unreachable("parent level not above its child's"))?;
                links.push(AggregationLink {
                    side: if position.is_multiple_of(2) {
                        Side::Left
                    } else {
                        Side::Right
                    },
                    level_correction: u64::from(correction),
                    sibling: Sibling::Hash(
                        Imprint::new(ALGORITHM, sibling)
                            .map_err(|_| Error::Unreachable("digest length"))?,
                    ),
                    unknown: Vec::new(),
                });
            }
            position /= 2;
        }
        let mut chain = AggregationChain {
            aggregation_time: self.time,
            chain_index: Vec::new(),
            input_data: None,
            input_hash: Imprint::from_bytes(hash)
                .map_err(|_| Error::Unreachable("round imprint that does not read back"))?,
            algorithm: ALGORITHM,
            links,
            unknown: Vec::new(),
        };
        let shape = chain::aggregation_shape(&chain)
            .ok_or_else(|| Error::Unreachable("round tree deeper than 63 links"))?;
        chain.chain_index = vec![shape];
        Ok(chain)
    }

    /// Every request's chain, in the order accepted (for tests and tools; the service reads
    /// them one by one as it answers).
    ///
    /// # Errors
    ///
    /// As [`ClosedRound::chain`].
    pub fn chains(&self) -> Result<Vec<AggregationChain>, Error> {
        (0..self.len()).map(|i| self.chain(i)).collect()
    }

    /// Writes request `index`'s aggregation chain straight from the tree: the bytes of
    /// [`ClosedRound::chain`]'s chain with aggregation time `time` and `prefix` (the chain
    /// index of the aggregators above) before its own chain index, without building it.
    ///
    /// # Errors
    ///
    /// As [`ClosedRound::chain`].
    pub fn encode_chain(
        &self,
        index: usize,
        time: u64,
        prefix: &[u64],
        out: &mut Encoder,
    ) -> Result<(), Error> {
        let (hash, level, metadata) = self.leaf(index)?;
        let links = self.links(index)?;
        // The chain index bit of each link, the first (metadata, on the left) lowest.
        if links.len() + 1 > 63 {
            return Err(Error::Unreachable("round tree deeper than 63 links"));
        }
        let shape = links.iter().rev().fold(1u64, |acc, (side, ..)| {
            (acc << 1) | u64::from(*side == Side::Left)
        });
        let shape = (shape << 1) | 1;
        out.nested(TAG_AGGREGATION_CHAIN, Flags::NONE, |e| {
            e.u64(TAG_TIME, time)?;
            prefix
                .iter()
                .chain([&shape])
                .try_for_each(|i| e.u64(TAG_INDEX, *i))?;
            e.element(TAG_INPUT_HASH, Flags::NONE, hash)?;
            e.u64(TAG_ALGORITHM, u64::from(ALGORITHM.id()))?;
            e.nested(Side::Left.tag(), Flags::NONE, |e| {
                if level != 0 {
                    e.u64(TAG_LEVEL_CORRECTION, u64::from(level))?;
                }
                e.element(TAG_METADATA, Flags::NONE, metadata.raw())
            })?;
            links.iter().try_for_each(|(side, correction, sibling)| {
                e.nested(side.tag(), Flags::NONE, |e| {
                    if *correction != 0 {
                        e.u64(TAG_LEVEL_CORRECTION, u64::from(*correction))?;
                    }
                    let mut imprint = [0u8; 33];
                    let (id, digest) = imprint.split_at_mut(1);
                    id.copy_from_slice(&[ALGORITHM.id()]);
                    digest.copy_from_slice(*sibling);
                    e.element(TAG_SIBLING_HASH, Flags::NONE, &imprint)
                })
            })
        })?;
        Ok(())
    }

    /// Request `index`'s hash, its level (its leaf's, less one) and its client's metadata.
    fn leaf(&self, index: usize) -> Result<(&[u8], u8, &Metadata), Error> {
        let Some((hash, client)) = self.leaves.get(index) else {
            return Err(Error::Unreachable(
                "chain asked for a request not in the round",
            ));
        };
        let level = self
            .layers
            .first()
            .and_then(|l| l.levels.get(index))
            .and_then(|l| l.checked_sub(1));
        let metadata = usize::try_from(client)
            .ok()
            .and_then(|c| self.clients.get(c));
        match (level, metadata) {
            (Some(level), Some(metadata)) => Ok((hash, level, metadata)),
            _ => Err(Error::Unreachable(
                "request without its leaf or its client's metadata",
            )),
        }
    }

    /// The links of request `index`'s chain above its leaf: side, level correction, sibling.
    fn links(&self, index: usize) -> Result<Vec<Link<'_>>, Error> {
        let mut links = Vec::with_capacity(self.layers.len());
        let mut position = index;
        for pair in self.layers.windows(2) {
            let [below, above] = pair else {
                return Err(Error::Unreachable("layer window"));
            };
            if let Some(sibling) = below.hashes.get(position ^ 1) {
                let level = below
                    .levels
                    .get(position)
                    .ok_or_else(|| Error::Unreachable("node without a level"))?;
                let parent = above
                    .levels
                    .get(position / 2)
                    .ok_or_else(|| Error::Unreachable("node without a parent"))?;
                let correction = parent.checked_sub(*level).and_then(|d| d.checked_sub(1));
                let correction = correction
                    .ok_or_else(|| Error::Unreachable("parent level not above its child's"))?;
                links.push((
                    if position.is_multiple_of(2) {
                        Side::Left
                    } else {
                        Side::Right
                    },
                    correction,
                    sibling,
                ));
            }
            position /= 2;
        }
        Ok(links)
    }
}

impl Drop for ClosedRound {
    fn drop(&mut self) {
        if let Some(recycler) = self.recycler.take() {
            recycler.put(Arrays {
                leaves: std::mem::take(&mut self.leaves),
                layers: std::mem::take(&mut self.layers),
            });
        }
    }
}

// === impl Recycler ===

impl Recycler {
    /// A recycler holding nothing yet.
    pub fn new() -> Self {
        Recycler::default()
    }

    /// Bytes of arrays held for the next round.
    pub fn spare_bytes(&self) -> usize {
        self.lock().as_ref().map_or(0, Arrays::bytes)
    }

    /// The spare arrays, unless there are none or they are more than four times what a round of
    /// `requests` needs (then they are freed).
    fn take(&self, requests: usize) -> Arrays {
        let spare = self.lock().take().unwrap_or_default();
        if spare.leaves.imprints.capacity() / 4
            > requests.saturating_mul(1 + ALGORITHM.digest_len())
        {
            return Arrays::default();
        }
        spare
    }

    /// Keeps `arrays` unless the arrays kept already are larger.
    fn put(&self, arrays: Arrays) {
        let mut spare = self.lock();
        if spare
            .as_ref()
            .is_none_or(|kept| kept.bytes() < arrays.bytes())
        {
            *spare = Some(arrays);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arrays>> {
        self.spare.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Arrays {
    fn bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| l.hashes.capacity() * 32 + l.levels.capacity())
            .sum();
        layers + self.leaves.imprints.capacity()
    }
}

// === impl SignedRound ===

impl SignedRound {
    /// A round whose root is a calendar leaf: `calendar` is its chain to the signed root.
    pub fn in_calendar(round: ClosedRound, calendar: (CalendarChain, Anchor)) -> Self {
        let time = round.time;
        SignedRound::under_parent(round, time, Vec::new(), calendar)
    }

    /// A round whose root was aggregated by a parent: `above` are the parent's chains from this
    /// round's root up (lowest first, already continuing at this round's root level),
    /// `calendar` the parent's calendar chain and record, `time` the parent's aggregation time.
    pub fn under_parent(
        round: ClosedRound,
        time: u64,
        above: Vec<AggregationChain>,
        calendar: (CalendarChain, Anchor),
    ) -> Self {
        let shared = encode_shared(&above, &calendar).ok();
        SignedRound {
            round,
            time,
            above,
            calendar,
            shared,
        }
    }

    /// The closed round.
    pub fn round(&self) -> &ClosedRound {
        &self.round
    }

    /// Request `index`'s signature: its chain in this round, re-timed to the aggregation time
    /// and with the chain index of the aggregators above prefixed, then their chains, the
    /// calendar chain and its record.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`] for an index past the round; [`Error::Ksi`] if the signature
    /// cannot be assembled.
    pub fn signature(&self, index: usize) -> Result<Signature, Error> {
        let mut chains = Vec::with_capacity(1 + self.above.len());
        chains.push(self.own_chain(index)?);
        chains.extend(self.above.iter().cloned());
        Ok(Signature::new(None, chains, Some(self.calendar.clone()))?)
    }

    /// Writes request `index`'s signature parts into `out`: its aggregation chains, calendar
    /// chain and record, the same bytes as encoding [`SignedRound::signature`]'s parts (a KSI
    /// aggregator response payload carries them so), with only the request's own chain encoded
    /// here and the rest copied from the round's single encoding.
    ///
    /// # Errors
    ///
    /// As [`SignedRound::signature`].
    pub fn encode_signature(&self, index: usize, out: &mut Encoder) -> Result<(), Error> {
        let shared = self.shared.as_deref().ok_or_else(|| {
            Error::Unreachable("the round's calendar chain and record did not encode")
        })?;
        let prefix = self
            .above
            .first()
            .map(|c| c.chain_index.as_slice())
            .unwrap_or_default();
        // A signature lists its chains longest chain index first (a stable sort). The own chain
        // extends the lowest chain above, so the order is already that one unless a parent
        // sent its chains out of order; then the signature is built and sorted as usual.
        let lengths =
            std::iter::once(prefix.len() + 1).chain(self.above.iter().map(|c| c.chain_index.len()));
        let sorted = lengths.clone().zip(lengths.skip(1)).all(|(a, b)| a >= b);
        if !sorted {
            let signature = self.signature(index)?;
            signature
                .aggregation_chains()
                .iter()
                .try_for_each(|c| c.encode(out))?;
            out.raw(&encode_shared(&[], &self.calendar)?);
            return Ok(());
        }
        self.round.encode_chain(index, self.time, prefix, out)?;
        out.raw(shared);
        Ok(())
    }

    /// Request `index`'s chain in this round, re-timed to the aggregation time and with the
    /// chain index of the aggregators above prefixed.
    fn own_chain(&self, index: usize) -> Result<AggregationChain, Error> {
        let mut own = self.round.chain(index)?;
        own.aggregation_time = self.time;
        if let Some(parent) = self.above.first() {
            let mut chain_index = parent.chain_index.clone();
            chain_index.append(&mut own.chain_index);
            own.chain_index = chain_index;
        }
        Ok(own)
    }
}

/// The chains above a round, its calendar chain and its record, as a signature encodes them.
fn encode_shared(
    above: &[AggregationChain],
    (chain, anchor): &(CalendarChain, Anchor),
) -> Result<Vec<u8>, Error> {
    let mut out = Encoder::new();
    above.iter().try_for_each(|c| c.encode(&mut out))?;
    chain.encode(&mut out)?;
    match anchor {
        Anchor::None => {}
        Anchor::CalendarAuth(record) => record.encode(&mut out)?,
        Anchor::Publication(record) => record.encode(&mut out, TAG_PUBLICATION_RECORD)?,
    }
    Ok(out.finish())
}

// Aggregation chain element tags (KSI Data Formats, "Aggregation hash chain"), for
// `ClosedRound::encode_chain`, which writes what `AggregationChain::encode` would.
const TAG_TIME: u16 = 0x02;
const TAG_INDEX: u16 = 0x03;
const TAG_INPUT_HASH: u16 = 0x05;
const TAG_ALGORITHM: u16 = 0x06;
const TAG_LEVEL_CORRECTION: u16 = 0x01;
const TAG_SIBLING_HASH: u16 = 0x02;

/// SHA-256's initial hash value (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The parent of two nodes: its hash and its level, one above the higher child's.
fn parent(
    left: &[u8; 32],
    right: &[u8; 32],
    left_level: u8,
    right_level: u8,
) -> Result<([u8; 32], u8), Error> {
    let Some(level) = left_level.max(right_level).checked_add(1) else {
        return Err(Error::Unreachable("round level above 255"));
    };
    Ok((node(left, right, level), level))
}

/// `SHA-256(0x01 || left || 0x01 || right || level)`: an inner node over two SHA-256 imprints,
/// 67 bytes in two blocks, padded by hand and compressed directly (no hasher state to buffer
/// through).
fn node(left: &[u8; 32], right: &[u8; 32], level: u8) -> [u8; 32] {
    let mut blocks = [[0u8; 64]; 2];
    let [first, second] = &mut blocks;
    first[0] = ALGORITHM.id();
    first[1..33].copy_from_slice(left);
    first[33] = ALGORITHM.id();
    first[34..64].copy_from_slice(&right[..30]);
    second[..2].copy_from_slice(&right[30..]);
    second[2] = level;
    second[3] = 0x80;
    second[56..].copy_from_slice(&(67u64 * 8).to_be_bytes());
    let mut state = SHA256_IV;
    compress256(&mut state, &blocks);
    digest(&state)
}

/// SHA-256 of `imprint || metadata || level` when it fits in one block (55 bytes or fewer: a
/// SHA-256 imprint and a client id of up to about a dozen bytes), built on the stack.
fn one_block(imprint: &[u8], metadata: &[u8], level: u8) -> Option<[u8; 32]> {
    let len = imprint.len() + metadata.len() + 1;
    if len > 55 {
        return None;
    }
    let mut block = [[0u8; 64]; 1];
    let [bytes] = &mut block;
    let (head, rest) = bytes.split_at_mut(imprint.len());
    head.copy_from_slice(imprint);
    let (middle, rest) = rest.split_at_mut(metadata.len());
    middle.copy_from_slice(metadata);
    let (last, rest) = rest.split_first_mut()?;
    *last = level;
    let (marker, _) = rest.split_first_mut()?;
    *marker = 0x80;
    bytes[56..].copy_from_slice(&(len as u64 * 8).to_be_bytes());
    let mut state = SHA256_IV;
    compress256(&mut state, &block);
    Some(digest(&state))
}

/// SHA-256 of `input`, padding it in place (the buffer is the caller's, reused per leaf).
fn sha256(input: &mut Vec<u8>) -> [u8; 32] {
    let bits = (input.len() as u64).wrapping_mul(8);
    input.push(0x80);
    let padded = (input.len() + 8).next_multiple_of(64);
    input.resize(padded - 8, 0);
    input.extend_from_slice(&bits.to_be_bytes());
    let (blocks, _) = input.as_chunks::<64>();
    let mut state = SHA256_IV;
    compress256(&mut state, blocks);
    digest(&state)
}

fn digest(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(i: u32, level: u8) -> Request {
        Request {
            hash: ALGORITHM.hash(&[&i.to_be_bytes()]).unwrap().into(),
            level,
            client_id: "anon".into(),
        }
    }

    #[test]
    fn every_chain_ends_in_the_root() {
        for n in [1u32, 2, 3, 5, 8, 13] {
            let mut round = Round::new(Limits::default());
            for i in 0..n {
                round.push(&request(i, (i % 3) as u8), 0).unwrap();
            }
            let closed = round.close(1_764_115_200).unwrap();
            let root = closed.root().unwrap();
            for (i, chain_) in closed.chains().unwrap().iter().enumerate() {
                let (out, _) = chain::aggregate(chain_, &chain_.input_hash, 0).unwrap();
                assert_eq!(out, root, "n {n} request {i}");
                assert_eq!(
                    chain_.chain_index,
                    vec![chain::aggregation_shape(chain_).unwrap()]
                );
            }
        }
    }

    /// The RFC 6962 split, recursively, as the round was first written: the layered build must
    /// give the same root and level for every size, whatever the levels and clients.
    fn recursive(nodes: &[(Imprint, u8)]) -> (Imprint, u8) {
        if let [node] = nodes {
            return node.clone();
        }
        let k = 1usize << (usize::BITS - 1 - (nodes.len() - 1).leading_zeros());
        let ((left, l), (right, r)) = (recursive(&nodes[..k]), recursive(&nodes[k..]));
        let level = l.max(r) + 1;
        (
            ALGORITHM
                .hash(&[left.as_bytes(), right.as_bytes(), &[level]])
                .unwrap(),
            level,
        )
    }

    #[test]
    fn layered_tree_is_the_rfc6962_tree() {
        for n in 1u32..=70 {
            let mut round = Round::new(Limits::default());
            let mut nodes = Vec::new();
            for i in 0..n {
                let mut r = request(i, (i * 7 % 5) as u8);
                r.client_id = if i % 4 == 0 {
                    "hospital".into()
                } else {
                    "anon".into()
                };
                let metadata =
                    Metadata::new(KsiString::from(r.client_id.as_str()), None, None, None).unwrap();
                let leaf = ALGORITHM
                    .hash(&[r.hash.as_bytes(), metadata.raw(), &[r.level + 1]])
                    .unwrap();
                nodes.push((leaf, r.level + 1));
                round.push(&r, 0).unwrap();
            }
            let closed = round.close(7).unwrap();
            let (root, level) = recursive(&nodes);
            assert_eq!(
                (closed.root().unwrap(), closed.root_level().unwrap()),
                (root.clone(), level),
                "n {n}"
            );
            for i in [0, n as usize / 2, n as usize - 1] {
                let c = closed.chain(i).unwrap();
                assert_eq!(
                    chain::aggregate(&c, &c.input_hash, 0).unwrap(),
                    (root.clone(), level),
                    "n {n} request {i}"
                );
            }
        }
    }

    /// The tree as the round built it before it was hashed while filling: every layer from the
    /// one below once all leaves were in, pairs hashed, an odd last node carried up.
    fn layered(bottom: Layer) -> Vec<Layer> {
        let mut layers = vec![bottom];
        while let Some(top) = layers.last().filter(|l| l.hashes.len() > 1) {
            let mut above = Layer::default();
            for (pair, levels) in top.hashes.chunks(2).zip(top.levels.chunks(2)) {
                match (pair, levels) {
                    ([left, right], [l, r]) => {
                        let level = l.max(r) + 1;
                        let digest = ALGORITHM
                            .hash(&[&[1], left, &[1], right, &[level]])
                            .unwrap();
                        above.hashes.push(digest.digest().try_into().unwrap());
                        above.levels.push(level);
                    }
                    ([carried], [level]) => {
                        above.hashes.push(*carried);
                        above.levels.push(*level);
                    }
                    _ => unreachable!(),
                }
            }
            layers.push(above);
        }
        layers
    }

    #[test]
    fn tree_hashed_while_filling_is_the_layered_tree() {
        for (n, capacity) in [
            1u32, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 1000, 1023, 1025, 4097,
        ]
        .into_iter()
        .zip([0, 1, 2, 9, 5, 3, 8, 10, 4096].into_iter().cycle())
        {
            let mut round = Round::with_capacity(Limits::default(), capacity);
            let mut bottom = Layer::default();
            for i in 0..n {
                let mut r = request(i, (i * 5 % 7) as u8);
                r.client_id = ["anon", "hospital", "a client id too long for one block"]
                    [(i / 3 % 3) as usize]
                    .into();
                let metadata =
                    Metadata::new(KsiString::from(r.client_id.as_str()), None, None, None).unwrap();
                let leaf = ALGORITHM
                    .hash(&[r.hash.as_bytes(), metadata.raw(), &[r.level + 1]])
                    .unwrap();
                bottom.hashes.push(leaf.digest().try_into().unwrap());
                bottom.levels.push(r.level + 1);
                round.push(&r, 0).unwrap();
            }
            let closed = round.close(7).unwrap();
            let expected = layered(bottom);
            assert_eq!(closed.layers.len(), expected.len(), "n {n}");
            for (depth, (got, want)) in closed.layers.iter().zip(&expected).enumerate() {
                assert_eq!(
                    (&got.hashes, &got.levels),
                    (&want.hashes, &want.levels),
                    "n {n} layer {depth}"
                );
            }
            for i in 0..n as usize {
                let c = closed.chain(i).unwrap();
                assert_eq!(
                    c.links.first().unwrap().level_correction,
                    u64::from(i as u32 * 5 % 7),
                    "n {n} request {i}"
                );
                assert_eq!(
                    chain::aggregate(&c, &c.input_hash, 0).unwrap().0,
                    closed.root().unwrap(),
                    "n {n} request {i}"
                );
            }
        }
    }

    #[test]
    fn a_recycled_round_is_the_same_tree_in_the_same_memory() {
        let recycler = Recycler::new();
        let mut previous = 0;
        let mut last_imprints = None;
        for (round_no, n) in [1000u32, 1000, 7, 4097, 1, 0, 513, 513]
            .into_iter()
            .enumerate()
        {
            let mut recycled = Round::recycled(Limits::default(), previous, &recycler);
            let mut fresh = Round::new(Limits::default());
            for i in 0..n {
                let mut r = request(i * 7 + round_no as u32, (i % 3) as u8);
                r.client_id =
                    ["anon", "a client id too long for one block"][(i / 5 % 2) as usize].into();
                recycled.push(&r, 0).unwrap();
                fresh.push(&r, 0).unwrap();
            }
            let (recycled, fresh) = (recycled.close(9).unwrap(), fresh.close(9).unwrap());
            assert_eq!(
                (recycled.root(), recycled.root_level(), recycled.len()),
                (fresh.root(), fresh.root_level(), fresh.len()),
                "round {round_no}"
            );
            assert_eq!(
                recycled.layers.len(),
                fresh.layers.len(),
                "round {round_no}"
            );
            for (got, want) in recycled.layers.iter().zip(&fresh.layers) {
                assert_eq!(
                    (&got.hashes, &got.levels),
                    (&want.hashes, &want.levels),
                    "round {round_no}"
                );
            }
            for i in 0..n as usize {
                assert_eq!(
                    recycled.chain(i).unwrap(),
                    fresh.chain(i).unwrap(),
                    "round {round_no} request {i}"
                );
            }
            // A round the size of the one before fills the same memory.
            let imprints = recycled.leaves.imprints.as_ptr();
            if round_no == 1 || round_no == 7 {
                assert_eq!(
                    Some(imprints),
                    last_imprints,
                    "round {round_no} did not reuse the arrays"
                );
            }
            last_imprints = Some(imprints);
            previous = n as usize;
            drop(recycled);
            assert!(
                recycler.spare_bytes() >= n as usize * 33,
                "round {round_no}"
            );
        }
        // Arrays more than four times what the next round needs are let go.
        let big = recycler.spare_bytes();
        let small = Round::recycled(Limits::default(), 10, &recycler)
            .close(9)
            .unwrap();
        assert!(recycler.spare_bytes() == 0 && big > 0);
        drop(small);
        assert!(recycler.spare_bytes() < big);
    }

    #[test]
    fn hand_padded_sha256_is_sha256() {
        for len in 0..200usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut buffer = data.clone();
            assert_eq!(
                Imprint::new(ALGORITHM, &sha256(&mut buffer)).unwrap(),
                ALGORITHM.hash(&[&data]).unwrap(),
                "{len} bytes"
            );
        }
        for metadata_len in 0..40usize {
            let metadata: Vec<u8> = (0..metadata_len).map(|i| i as u8).collect();
            let imprint = ALGORITHM.hash(&[b"x"]).unwrap();
            let expected = ALGORITHM
                .hash(&[imprint.as_bytes(), &metadata, &[3]])
                .unwrap();
            let template = LeafBlock::new(&metadata);
            assert_eq!(
                template.is_some(),
                33 + metadata_len + 1 <= 55,
                "{metadata_len}-byte metadata"
            );
            if let Some(template) = template {
                let leaf = template
                    .leaf(imprint.as_bytes().try_into().unwrap(), 3)
                    .unwrap();
                assert_eq!(
                    Imprint::new(ALGORITHM, &leaf).unwrap(),
                    expected,
                    "{metadata_len}-byte metadata"
                );
            }
            match one_block(imprint.as_bytes(), &metadata, 3) {
                Some(digest) => assert_eq!(Imprint::new(ALGORITHM, &digest).unwrap(), expected),
                None => assert!(33 + metadata_len + 1 > 55),
            }
        }
        let (left, right) = ([7u8; 32], [9u8; 32]);
        let expected = ALGORITHM.hash(&[&[1], &left, &[1], &right, &[5]]).unwrap();
        assert_eq!(
            Imprint::new(ALGORITHM, &node(&left, &right, 5)).unwrap(),
            expected
        );
    }

    /// A calendar chain and record for tests: their content is not checked here, only encoded.
    fn calendar_part(time: u64, root: &Imprint) -> (CalendarChain, Anchor) {
        use backbone_timestamping_verify::publication::PublicationData;
        use backbone_timestamping_verify::signature::{
            CalendarAuthRecord, CalendarLink, SignatureData,
        };
        let links = (0..31u32).map(|i| CalendarLink {
            side: if i % 3 == 0 { Side::Left } else { Side::Right },
            sibling: ALGORITHM.hash(&[&i.to_be_bytes()]).unwrap(),
        });
        let chain = CalendarChain {
            publication_time: time,
            aggregation_time: None,
            input_hash: root.clone(),
            links: links.collect(),
            unknown: Vec::new(),
        };
        let signature = SignatureData {
            signature_type: "1.2.840.10045.4.3.2".into(),
            signature_value: vec![0x30; 71],
            certificate_id: vec![1, 2, 3, 4],
            certificate_repository_uri: None,
            unknown: Vec::new(),
        };
        let record = CalendarAuthRecord::new(
            PublicationData::new(time, ALGORITHM.hash(&[b"calendar root"]).unwrap()),
            signature,
        )
        .unwrap();
        (chain, Anchor::CalendarAuth(record))
    }

    /// The signature parts as a response payload carried them before they were written from
    /// the round's one encoding.
    fn parts_of(signature: &Signature) -> Vec<u8> {
        let mut out = Encoder::new();
        for c in signature.aggregation_chains() {
            c.encode(&mut out).unwrap();
        }
        signature
            .calendar_chain()
            .unwrap()
            .encode(&mut out)
            .unwrap();
        signature
            .calendar_auth_record()
            .unwrap()
            .encode(&mut out)
            .unwrap();
        out.finish()
    }

    #[test]
    fn encoded_signature_parts_are_the_signatures() {
        let time = 1_764_115_200;
        let mut round = Round::new(Limits::default());
        for i in 0..37 {
            round.push(&request(i, (i % 4) as u8), time).unwrap();
        }
        let closed = round.close(time).unwrap();
        let root = closed.root().unwrap();
        let level = closed.root_level().unwrap();
        let signed = SignedRound::in_calendar(closed, calendar_part(time, &root));
        for i in [0, 1, 17, 36] {
            let mut out = Encoder::new();
            signed.encode_signature(i, &mut out).unwrap();
            assert_eq!(
                out.finish(),
                parts_of(&signed.signature(i).unwrap()),
                "request {i}"
            );
        }

        // Under two parents: their chains lowest first, as a parent answers, and out of order.
        let parent = |index: Vec<u64>, hash: &Imprint, level: u64| AggregationChain {
            aggregation_time: time + 1,
            chain_index: index,
            input_data: None,
            input_hash: hash.clone(),
            algorithm: ALGORITHM,
            links: vec![AggregationLink {
                side: Side::Left,
                level_correction: level,
                sibling: Sibling::Hash(hash.clone()),
                unknown: Vec::new(),
            }],
            unknown: Vec::new(),
        };
        let above = vec![
            parent(vec![3, 5, 2], &root, u64::from(level)),
            parent(vec![3, 5], &root, 0),
            parent(vec![3], &root, 0),
        ];
        for above in [above.clone(), above.into_iter().rev().collect()] {
            let mut round = Round::new(Limits::default());
            for i in 0..5 {
                round.push(&request(i, 0), time).unwrap();
            }
            let signed = SignedRound::under_parent(
                round.close(time).unwrap(),
                time + 1,
                above,
                calendar_part(time + 1, &root),
            );
            for i in 0..5 {
                let mut out = Encoder::new();
                signed.encode_signature(i, &mut out).unwrap();
                assert_eq!(
                    out.finish(),
                    parts_of(&signed.signature(i).unwrap()),
                    "request {i}"
                );
            }
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_input_level: 2,
            max_requests: 1,
        };
        let mut round = Round::new(limits);
        assert!(matches!(
            round.push(&request(0, 3), 0),
            Err(Error::Request(_))
        ));
        round.push(&request(0, 2), 0).unwrap();
        assert!(matches!(
            round.push(&request(1, 0), 0),
            Err(Error::Pushback { .. })
        ));
        let sha1 = Request {
            hash: HashAlgorithm::Sha1.hash(&[b"x"]).unwrap().into(),
            level: 0,
            client_id: "a".into(),
        };
        assert!(Round::check(&limits, &sha1, 1_764_115_200).is_err());
        assert!(Round::new(limits).close(5).unwrap().root().is_none());
        let empty = Round::with_capacity(Limits::default(), 1000)
            .close(5)
            .unwrap();
        assert!(empty.root().is_none() && empty.root_level().is_none() && empty.layers.is_empty());
    }
}
