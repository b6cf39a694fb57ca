//! Timestamped batches and the records' proofs of membership. Pure code.
//!
//! A batch covers the records `first_seq .. first_seq + count`. Its Merkle tree
//! ([RFC 9162 §2.1](https://www.rfc-editor.org/rfc/rfc9162#section-2.1), SHA-256) has one leaf per
//! record, `leaf_hash(record_hash)`, in sequence order. The timestamping service signs the imprint
//! `0x01 ‖ root` (SHA-256 algorithm id, then the root) at level 0.
//!
//! ```text
//!  batch  = 0x01 ‖ first_seq:u64 ‖ count:u64 ‖ root:[32] ‖ stamped_at_ms:u64 ‖ len:u32 ‖ ksi_signature
//!  proof  = 0x01 ‖ batch_first_seq:u64 ‖ leaf_index:u64 ‖ batch_count:u64 ‖ n:u8 ‖ n × [32]
//! ```

use backbone_hsm::batch::merkle::{self, MAX_PATH_LEN};

use super::record::{DecodeError, Hash, Reader};

/// The batch and proof format version this code writes and reads.
pub const VERSION: u8 = 0x01;

/// The KSI imprint algorithm id of SHA-256.
pub const SHA256_IMPRINT_ID: u8 = 0x01;

/// Largest KSI signature stored with a batch: a signature is a few KiB.
pub const MAX_KSI_SIGNATURE_LEN: usize = 1 << 20;

/// A timestamped batch of consecutive records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The sequence number of the first record; also the batch's id.
    pub first_seq: u64,
    /// How many records it covers.
    pub count: u64,
    /// The Merkle root over the records' hashes.
    pub root: Hash,
    /// When the batch was stamped, milliseconds since the Unix epoch (the gateway's clock; the KSI
    /// signature carries the service's).
    pub stamped_at_ms: u64,
    /// The KSI signature over [`Batch::imprint`].
    pub ksi_signature: Vec<u8>,
}

/// Where one record sits in its batch: enough to recompute the batch root from the record hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordProof {
    /// The batch's first sequence number (its id).
    pub batch: u64,
    /// The record's leaf index in the batch.
    pub leaf_index: u64,
    /// The number of records in the batch.
    pub batch_count: u64,
    /// The audit path, bottom-up.
    pub path: Vec<Hash>,
}

// === impl Batch ===

impl Batch {
    /// The imprint the timestamping service signs: `0x01 ‖ root`.
    pub fn imprint(&self) -> [u8; 33] {
        imprint(&self.root)
    }

    /// Whether the batch covers `seq`.
    pub fn covers(&self, seq: u64) -> bool {
        seq >= self.first_seq && seq - self.first_seq < self.count
    }

    /// The stored encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(61 + self.ksi_signature.len());
        out.push(VERSION);
        out.extend_from_slice(&self.first_seq.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.root);
        out.extend_from_slice(&self.stamped_at_ms.to_be_bytes());
        let len = u32::try_from(self.ksi_signature.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.ksi_signature);
        out
    }

    /// Decodes the stored encoding.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes };
        check_version(&mut r, "batch version")?;
        let first_seq = r.u64("batch first_seq")?;
        let count = r.u64("batch count")?;
        if count == 0 {
            return Err(DecodeError::Invalid {
                field: "batch count",
                reason: "zero".into(),
            });
        }
        let root = r.hash("batch root")?;
        let stamped_at_ms = r.u64("batch stamped_at_ms")?;
        let ksi_signature = r.blob_max("batch ksi_signature", MAX_KSI_SIGNATURE_LEN)?;
        if !r.bytes.is_empty() {
            return Err(DecodeError::Trailing(r.bytes.len()));
        }
        Ok(Batch {
            first_seq,
            count,
            root,
            stamped_at_ms,
            ksi_signature,
        })
    }
}

// === impl RecordProof ===

impl RecordProof {
    /// Recomputes the batch root from the record's hash; `None` when the path does not fit the
    /// index and size.
    pub fn root(&self, record_hash: &Hash) -> Option<Hash> {
        merkle::root_from_path(
            &merkle::leaf_hash(record_hash),
            self.leaf_index,
            self.batch_count,
            &self.path,
        )
    }

    /// The stored encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(26 + 32 * self.path.len());
        out.push(VERSION);
        out.extend_from_slice(&self.batch.to_be_bytes());
        out.extend_from_slice(&self.leaf_index.to_be_bytes());
        out.extend_from_slice(&self.batch_count.to_be_bytes());
        // Paths are at most MAX_PATH_LEN (64) long.
        out.push(u8::try_from(self.path.len()).unwrap_or(u8::MAX));
        for node in &self.path {
            out.extend_from_slice(node);
        }
        out
    }

    /// Decodes the stored encoding, refusing a path longer than any tree has.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes };
        check_version(&mut r, "proof version")?;
        let batch = r.u64("proof batch")?;
        let leaf_index = r.u64("proof leaf_index")?;
        let batch_count = r.u64("proof batch_count")?;
        let n = usize::from(r.u8("proof path length")?);
        if n > MAX_PATH_LEN {
            return Err(DecodeError::Invalid {
                field: "proof path length",
                reason: format!("{n} > {MAX_PATH_LEN}"),
            });
        }
        let mut path = Vec::with_capacity(n);
        for _ in 0..n {
            path.push(r.hash("proof path")?);
        }
        if !r.bytes.is_empty() {
            return Err(DecodeError::Trailing(r.bytes.len()));
        }
        Ok(RecordProof {
            batch,
            leaf_index,
            batch_count,
            path,
        })
    }
}

/// The imprint the timestamping service signs for a batch root: `0x01 ‖ root`.
pub fn imprint(root: &Hash) -> [u8; 33] {
    let mut imprint = [0; 33];
    let (id, digest) = imprint.split_at_mut(1);
    id.copy_from_slice(&[SHA256_IMPRINT_ID]);
    digest.copy_from_slice(root);
    imprint
}

/// The root of the tree over record hashes `hashes` (in sequence order).
pub fn root(hashes: &[Hash]) -> Hash {
    merkle::Tree::new(hashes.iter().map(|h| merkle::leaf_hash(h)).collect()).root()
}

/// Builds the tree over record hashes `hashes` (in sequence order from `first_seq`); returns the
/// root and each record's proof.
pub fn build(first_seq: u64, hashes: &[Hash]) -> (Hash, Vec<RecordProof>) {
    let tree = merkle::Tree::new(hashes.iter().map(|h| merkle::leaf_hash(h)).collect());
    let count = hashes.len() as u64;
    let proofs = (0..hashes.len())
        .map(|i| RecordProof {
            batch: first_seq,
            leaf_index: i as u64,
            batch_count: count,
            path: tree.audit_path(i).unwrap_or_default(),
        })
        .collect();
    (tree.root(), proofs)
}

fn check_version(r: &mut Reader<'_>, field: &'static str) -> Result<(), DecodeError> {
    match r.u8(field)? {
        VERSION => Ok(()),
        other => Err(DecodeError::Invalid {
            field,
            reason: format!("{other:#04x}, expected {VERSION:#04x}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_recompute_the_root_for_every_size() {
        for size in 1..=17u64 {
            let hashes: Vec<Hash> = (0..size).map(|i| [i as u8; 32]).collect();
            let (root, proofs) = build(100, &hashes);
            assert_eq!(super::root(&hashes), root);
            for (proof, hash) in proofs.iter().zip(&hashes) {
                let decoded = RecordProof::decode(&proof.encode()).unwrap();
                assert_eq!(&decoded, proof);
                assert_eq!(decoded.root(hash), Some(root), "size {size}");
                assert_ne!(decoded.root(&[0xff; 32]), Some(root));
            }
        }
    }

    #[test]
    fn batch_round_trip_and_truncations() {
        let batch = Batch {
            first_seq: 5,
            count: 3,
            root: [9; 32],
            stamped_at_ms: 77,
            ksi_signature: vec![1; 40],
        };
        let bytes = batch.encode();
        assert_eq!(Batch::decode(&bytes).unwrap(), batch);
        for cut in 0..bytes.len() {
            assert!(Batch::decode(&bytes[..cut]).is_err());
        }
        assert!(batch.covers(5) && batch.covers(7) && !batch.covers(8) && !batch.covers(4));
        assert_eq!(batch.imprint()[0], 0x01);
        assert_eq!(&batch.imprint()[1..], &[9; 32]);
    }
}
