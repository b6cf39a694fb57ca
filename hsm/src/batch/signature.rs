//! [`BatchSignature`]: one caller's proof that its message is in a signed batch, its binary
//! encoding (version 1, described in `hsm/docs/batch-format.md`) and its verification.
//!
//! Pure code: bytes in, values or errors out.

use sha2::{Digest, Sha256};

use super::merkle::{self, Hash, MAX_PATH_LEN};
use crate::{Error, PublicKey, SignatureAlgorithm};

/// The version byte of the encoding this module writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Longest root signature accepted: an RSA-8192 signature; ours are at most 384 bytes (RSA-3072).
pub const MAX_SIGNATURE_LEN: usize = 1024;

/// Longest encoding: the fixed fields, a full path and the longest signature.
pub const MAX_ENCODED_LEN: usize = FIXED_LEN + MAX_PATH_LEN * 32 + 2 + MAX_SIGNATURE_LEN;

/// The context that starts every to-be-signed batch root, so that a batch root signature can never
/// be taken for a signature over anything else made with the same key.
pub const SIGNING_CONTEXT: &[u8; 18] = b"backbone-batch-v1\0";

/// Length of [`to_be_signed`]'s output.
pub const TO_BE_SIGNED_LEN: usize = SIGNING_CONTEXT.len() + 8 + 32;

/// `BadSignature` reason when the message and hash chain do not rebuild the carried root.
pub const CHAIN_MISMATCH: &str = "hash chain does not lead to the signed root";

/// `BadSignature` reason when the root signature does not verify under the key.
pub const ROOT_SIGNATURE_MISMATCH: &str = "root signature does not match";

/// Version, algorithm, leaf index, tree size, mask, root and path length.
const FIXED_LEN: usize = 1 + 1 + 8 + 8 + 32 + 32 + 1;

const WHAT: &str = "batch signature";

/// One message's share of a batch signature: the token's signature over the batch root, and the
/// hash chain from the message's leaf to that root.
///
/// Values come from [`BatchSigner::sign`](super::BatchSigner::sign) or
/// [`BatchSignature::from_bytes`]; either way the index is below the tree size and the path has the
/// length RFC 9162 gives for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSignature {
    algorithm: SignatureAlgorithm,
    leaf_index: u64,
    tree_size: u64,
    mask: Hash,
    root: Hash,
    path: Vec<Hash>,
    signature: Vec<u8>,
}

/// The bytes the token signs for a batch: [`SIGNING_CONTEXT`], the tree size as a big-endian u64,
/// and the root.
pub fn to_be_signed(tree_size: u64, root: &Hash) -> [u8; TO_BE_SIGNED_LEN] {
    let mut tbs = [0; TO_BE_SIGNED_LEN];
    let (context, rest) = tbs.split_at_mut(SIGNING_CONTEXT.len());
    let (size, root_out) = rest.split_at_mut(8);
    context.copy_from_slice(SIGNING_CONTEXT);
    size.copy_from_slice(&tree_size.to_be_bytes());
    root_out.copy_from_slice(root);
    tbs
}

/// The leaf hash of a message: `SHA-256(0x00 || mask || SHA-256(message))`.
pub fn message_leaf(mask: &Hash, message_digest: &Hash) -> Hash {
    let mut input = [0; 64];
    let (mask_out, digest_out) = input.split_at_mut(32);
    mask_out.copy_from_slice(mask);
    digest_out.copy_from_slice(message_digest);
    merkle::leaf_hash(&input)
}

// === impl BatchSignature ===

impl BatchSignature {
    pub(crate) fn new(
        algorithm: SignatureAlgorithm,
        leaf_index: u64,
        tree_size: u64,
        mask: Hash,
        root: Hash,
        path: Vec<Hash>,
        signature: Vec<u8>,
    ) -> Self {
        BatchSignature {
            algorithm,
            leaf_index,
            tree_size,
            mask,
            root,
            path,
            signature,
        }
    }

    /// Checks that `message` is in the batch and that `key` signed the batch root.
    ///
    /// # Errors
    ///
    /// [`Error::BadSignature`] with reason [`CHAIN_MISMATCH`] when the message, mask, index, size
    /// or path do not lead to the root; with reason [`ROOT_SIGNATURE_MISMATCH`] when the root
    /// signature does not verify under `key`; and when `key` cannot be used with the algorithm.
    pub fn verify(&self, message: &[u8], key: &PublicKey) -> Result<(), Error> {
        self.verify_chain(message)?;
        self.verify_root(key)
    }

    /// Checks only that `message` leads through the hash chain to [`Self::root`].
    ///
    /// An auditor who checks many messages of one batch can check the root signature once with
    /// [`Self::verify_root`], remember `(root, tree size, signature)`, and call only this for
    /// the other messages.
    pub fn verify_chain(&self, message: &[u8]) -> Result<(), Error> {
        let leaf = message_leaf(&self.mask, &Sha256::digest(message).into());
        match merkle::root_from_path(&leaf, self.leaf_index, self.tree_size, &self.path) {
            Some(root) if root == self.root => Ok(()),
            _ => Err(self.bad(CHAIN_MISMATCH)),
        }
    }

    /// Checks only the token's signature over [`Self::root`] and [`Self::tree_size`].
    pub fn verify_root(&self, key: &PublicKey) -> Result<(), Error> {
        if !key.key_type().supports(self.algorithm) {
            return Err(self.bad("the key type does not match the algorithm"));
        }
        let tbs = to_be_signed(self.tree_size, &self.root);
        key.verify(self.algorithm, &tbs, &self.signature)
            .map_err(|_| self.bad(ROOT_SIGNATURE_MISMATCH))
    }

    /// The algorithm of the root signature.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// The message's position in the batch, from 0.
    pub fn leaf_index(&self) -> u64 {
        self.leaf_index
    }

    /// The number of messages in the batch.
    pub fn tree_size(&self) -> u64 {
        self.tree_size
    }

    /// The blinding mask of this message's leaf.
    pub fn mask(&self) -> &Hash {
        &self.mask
    }

    /// The batch's Merkle root: the same for every message of the batch, so it names the batch.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The audit path, from the leaf's sibling up to the root's child.
    pub fn path(&self) -> &[Hash] {
        &self.path
    }

    /// The token's signature over [`to_be_signed`] of the tree size and root.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The version 1 encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(FIXED_LEN + self.path.len() * 32 + 2 + self.signature.len());
        out.push(FORMAT_VERSION);
        out.push(self.algorithm.code());
        out.extend_from_slice(&self.leaf_index.to_be_bytes());
        out.extend_from_slice(&self.tree_size.to_be_bytes());
        out.extend_from_slice(&self.mask);
        out.extend_from_slice(&self.root);
        // Both lengths fit: the path is at most MAX_PATH_LEN (64) long by construction, and the
        // signer refuses signatures over MAX_SIGNATURE_LEN (1024) bytes.
        out.push(self.path.len() as u8);
        for hash in &self.path {
            out.extend_from_slice(hash);
        }
        out.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes the version 1 encoding.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for an unknown version or algorithm code, a leaf index not below the tree
    /// size, a path whose length is not the one RFC 9162 gives for the index and size, an empty or
    /// too long signature, missing bytes, or trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader(bytes);
        let version = r.u8("version")?;
        if version != FORMAT_VERSION {
            return Err(Error::decode(
                WHAT,
                format!("version {version} is not supported (only {FORMAT_VERSION})"),
            ));
        }
        let code = r.u8("algorithm")?;
        let algorithm = SignatureAlgorithm::from_code(code)
            .ok_or_else(|| Error::decode(WHAT, format!("unknown algorithm code {code}")))?;
        let leaf_index = r.u64("leaf index")?;
        let tree_size = r.u64("tree size")?;
        let mask = r.hash("mask")?;
        let root = r.hash("root")?;
        let path_len = usize::from(r.u8("path length")?);
        let expected = merkle::path_len(leaf_index, tree_size).ok_or_else(|| {
            Error::decode(
                WHAT,
                format!("leaf index {leaf_index} is not below the tree size {tree_size}"),
            )
        })?;
        if path_len != expected {
            return Err(Error::decode(
                WHAT,
                format!(
                    "path of {path_len} hashes, but leaf {leaf_index} of {tree_size} needs {expected}"
                ),
            ));
        }
        // `expected` is at most MAX_PATH_LEN, and `take` checks the bytes are there before the
        // allocation below.
        let path_bytes = r.take(path_len * 32, "path")?;
        let path = path_bytes.as_chunks::<32>().0.to_vec();
        let signature_len = usize::from(r.u16("signature length")?);
        if signature_len == 0 || signature_len > MAX_SIGNATURE_LEN {
            return Err(Error::decode(
                WHAT,
                format!("signature of {signature_len} bytes (expected 1 to {MAX_SIGNATURE_LEN})"),
            ));
        }
        let signature = r.take(signature_len, "signature")?.to_vec();
        if !r.0.is_empty() {
            return Err(Error::decode(WHAT, format!("{} trailing bytes", r.0.len())));
        }
        Ok(BatchSignature {
            algorithm,
            leaf_index,
            tree_size,
            mask,
            root,
            path,
            signature,
        })
    }

    fn bad(&self, reason: &'static str) -> Error {
        Error::BadSignature {
            algorithm: self.algorithm.to_string(),
            reason,
        }
    }
}

/// A cursor over the bytes not yet decoded.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, field: &str) -> Result<&'a [u8], Error> {
        let Some((taken, rest)) = self.0.split_at_checked(len) else {
            return Err(Error::decode(
                WHAT,
                format!(
                    "truncated in the {field}: {len} bytes needed, {} left",
                    self.0.len()
                ),
            ));
        };
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], Error> {
        let bytes = self.take(N, field)?;
        bytes
            .try_into()
            .map_err(|_| Error::Unreachable("take returned a slice of another length"))
    }

    fn u8(&mut self, field: &str) -> Result<u8, Error> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    fn u16(&mut self, field: &str) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &str) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn hash(&mut self, field: &str) -> Result<Hash, Error> {
        self.array(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BatchSignature {
        let path = vec![[7; 32]; merkle::path_len(5, 13).unwrap()];
        BatchSignature::new(
            SignatureAlgorithm::Ed25519,
            5,
            13,
            [1; 32],
            [2; 32],
            path,
            vec![9; 64],
        )
    }

    #[test]
    fn round_trip() {
        let sig = sample();
        let bytes = sig.to_bytes();
        assert_eq!(bytes.len(), FIXED_LEN + 4 * 32 + 2 + 64);
        assert_eq!(BatchSignature::from_bytes(&bytes).unwrap(), sig);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = sample().to_bytes();
        for len in 0..bytes.len() {
            assert!(
                matches!(
                    BatchSignature::from_bytes(&bytes[..len]),
                    Err(Error::Decode { .. })
                ),
                "{len}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            BatchSignature::from_bytes(&long),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn bad_fields_are_refused() {
        let bytes = sample().to_bytes();
        let with = |at: usize, value: &[u8]| {
            let mut b = bytes.clone();
            b[at..at + value.len()].copy_from_slice(value);
            BatchSignature::from_bytes(&b)
        };
        assert!(with(0, &[2]).is_err(), "version");
        assert!(with(1, &[0]).is_err(), "algorithm");
        assert!(with(2, &13u64.to_be_bytes()).is_err(), "index = size");
        assert!(with(10, &0u64.to_be_bytes()).is_err(), "size 0");
        assert!(
            with(10, &1000u64.to_be_bytes()).is_err(),
            "path too short for the size"
        );
        assert!(with(82, &[5]).is_err(), "path length");
        let sig_len_at = FIXED_LEN + 4 * 32;
        assert!(
            with(sig_len_at, &0u16.to_be_bytes()).is_err(),
            "empty signature"
        );
        assert!(
            with(sig_len_at, &u16::MAX.to_be_bytes()).is_err(),
            "huge signature"
        );
    }

    /// What the fuzz target checks, on mutations of a valid encoding: no panic, and whatever
    /// decodes encodes back to the same bytes.
    #[test]
    fn mutations_decode_canonically_or_fail() {
        let bytes = sample().to_bytes();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % b.len() as u64) as usize;
                match next() % 3 {
                    0 => b[at] = next() as u8,
                    1 => b.truncate(at),
                    _ => b.insert(at, next() as u8),
                }
                if b.is_empty() {
                    break;
                }
            }
            if let Ok(decoded) = BatchSignature::from_bytes(&b) {
                assert_eq!(decoded.to_bytes(), b);
            }
        }
    }

    #[test]
    fn to_be_signed_layout() {
        let tbs = to_be_signed(0x0102, &[0xaa; 32]);
        assert_eq!(&tbs[..18], b"backbone-batch-v1\0");
        assert_eq!(&tbs[18..26], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&tbs[26..], &[0xaa; 32]);
    }
}
