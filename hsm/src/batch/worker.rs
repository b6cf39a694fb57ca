//! The worker threads of a batch signer: each gathers queued requests into a batch, builds its
//! tree, has the token sign the root, and answers every caller of the batch.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::Histogram;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::merkle::{Hash, Tree};
use super::signature::{self, BatchSignature, MAX_SIGNATURE_LEN};
use crate::{Error, SignatureAlgorithm, Signer};

/// The first half of the block that starts mask derivation, `mask_i = SHA-256(MASK_CONTEXT || seed
/// || u64 i)`: with the 32-byte seed it fills one SHA-256 block, so each mask costs one more.
const MASK_CONTEXT: &[u8; 32] = b"backbone-batch-mask-v1\0\0\0\0\0\0\0\0\0\0";

/// The longest a lingering worker sleeps before it looks at the queue again.
const LINGER_SLICE: Duration = Duration::from_millis(1);

/// What a worker sends each caller: the signed batch and the caller's leaf index in it, or the
/// batch's error. Callers build their own [`BatchSignature`] from it, on their own threads.
pub(super) type Answer = Result<(Arc<SignedBatch>, usize), Arc<Error>>;

/// A batch whose root the key store has signed: everything every caller's proof is cut from.
pub(super) struct SignedBatch {
    algorithm: SignatureAlgorithm,
    tree: Tree,
    masks: Vec<Hash>,
    signature: Vec<u8>,
}

/// What a caller puts in the queue.
pub(super) enum Job {
    /// Sign this digest and answer on `reply`.
    Sign(Request),
    /// Finish the current batch and exit; [`BatchSigner::shutdown`](super::BatchSigner::shutdown)
    /// queues one per worker.
    Stop,
}

/// One caller's request: the SHA-256 of its message, and where to send its proof.
pub(super) struct Request {
    pub(super) digest: Hash,
    pub(super) reply: oneshot::Sender<Answer>,
}

/// One worker thread's state. The workers of a signer share the queue's receiving end: the worker
/// holding the lock gathers the next batch while the others sign theirs.
pub(super) struct Worker {
    pub(super) signer: Arc<dyn Signer>,
    pub(super) jobs: Arc<Mutex<Receiver<Job>>>,
    pub(super) max_batch: usize,
    pub(super) max_linger: Duration,
    pub(super) linger_under_load: bool,
    pub(super) batch_size: Option<Histogram>,
    pub(super) rng: SystemRandom,
}

// === impl Worker ===

impl Worker {
    /// Signs batches until told to stop or until every [`BatchSigner`](super::BatchSigner) handle
    /// is gone and the queue is empty.
    pub(super) fn run(self) {
        let mut busy = !self.linger_under_load;
        loop {
            let (batch, last) = self.gather(busy);
            // With `linger_under_load`, lingering waits only when requests come in company: after
            // a batch of one (low load) the next request is signed at once.
            busy = !self.linger_under_load || batch.len() > 1;
            if !batch.is_empty() {
                self.sign(batch);
            }
            if last {
                tracing::debug!(label = self.signer.label(), "batch signer worker stopped");
                return;
            }
        }
    }

    /// Waits for a request, then takes the requests queued behind it: up to `max_batch`, waiting
    /// up to `max_linger` for more when `busy`.
    ///
    /// While it lingers, the worker sleeps and then takes what queued meanwhile, instead of
    /// blocking on the queue: a worker blocked on the queue is woken by every request that
    /// arrives (a futex wake for the sender and a context switch for both), about ten times per
    /// batch under load; a sleeping one is woken once per [`LINGER_SLICE`]. The slice keeps a
    /// long linger from outliving a full batch by more than a millisecond.
    /// The flag is true when the worker must exit after this batch.
    fn gather(&self, busy: bool) -> (Vec<Request>, bool) {
        // A worker that panicked cannot have left the receiver half-changed.
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Vec::new();
        match jobs.recv() {
            Ok(Job::Sign(request)) => batch.push(request),
            Ok(Job::Stop) | Err(_) => return (batch, true),
        }
        let linger = if busy {
            self.max_linger
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + linger;
        loop {
            while batch.len() < self.max_batch {
                match jobs.try_recv() {
                    Ok(Job::Sign(request)) => batch.push(request),
                    Ok(Job::Stop) | Err(TryRecvError::Disconnected) => return (batch, true),
                    Err(TryRecvError::Empty) => break,
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if batch.len() >= self.max_batch || left.is_zero() {
                return (batch, false);
            }
            std::thread::sleep(left.min(LINGER_SLICE));
        }
    }

    /// Signs one batch and answers its callers: each gets the signed batch and its index, or the
    /// error.
    fn sign(&self, batch: Vec<Request>) {
        if let Some(histogram) = &self.batch_size {
            histogram.observe(batch.len() as f64);
        }
        match self.sign_tree(&batch) {
            Ok(signed) => {
                let signed = Arc::new(signed);
                for (index, request) in batch.into_iter().enumerate() {
                    // A caller that stopped waiting has dropped its receiver; nothing to do.
                    let _ = request.reply.send(Ok((Arc::clone(&signed), index)));
                }
            }
            Err(error) => {
                tracing::warn!(label = self.signer.label(), size = batch.len(), %error, "batch signature failed");
                let error = Arc::new(error);
                for request in batch {
                    let _ = request.reply.send(Err(Arc::clone(&error)));
                }
            }
        }
    }

    /// Builds the masked tree over the requests' digests and has the key store sign its root.
    fn sign_tree(&self, batch: &[Request]) -> Result<SignedBatch, Error> {
        let mut seed_block = [0; 64];
        let (context, seed) = seed_block.split_at_mut(32);
        context.copy_from_slice(MASK_CONTEXT);
        self.rng
            .fill(seed)
            .map_err(|e| Error::crypto("batch mask seed", e))?;
        let seeded = Sha256::new().chain_update(seed_block);
        let masks: Vec<Hash> = (0..batch.len() as u64)
            .map(|i| {
                seeded
                    .clone()
                    .chain_update(i.to_be_bytes())
                    .finalize()
                    .into()
            })
            .collect();
        let leaves = masks
            .iter()
            .zip(batch)
            .map(|(mask, request)| signature::message_leaf(mask, &request.digest));
        let tree = Tree::new(leaves.collect());
        let signature = self
            .signer
            .sign(&signature::to_be_signed(batch.len() as u64, &tree.root()))?;
        if signature.is_empty() || signature.len() > MAX_SIGNATURE_LEN {
            return Err(Error::decode(
                "batch root signature from the key store",
                format!(
                    "{} bytes (expected 1 to {MAX_SIGNATURE_LEN})",
                    signature.len()
                ),
            ));
        }
        Ok(SignedBatch {
            algorithm: self.signer.algorithm(),
            tree,
            masks,
            signature,
        })
    }
}

// === impl SignedBatch ===

impl SignedBatch {
    /// The proof of leaf `index`.
    pub(super) fn proof(&self, index: usize) -> Result<BatchSignature, Error> {
        let (Some(path), Some(mask)) =
            (self.tree.audit_path(index), self.masks.get(index).copied())
        else {
            return Err(Error::Unreachable("batch leaf index out of range"));
        };
        let size = self.tree.size() as u64;
        Ok(BatchSignature::new(
            self.algorithm,
            index as u64,
            size,
            mask,
            self.tree.root(),
            path,
            self.signature.clone(),
        ))
    }
}

/// A copy of `error` for each caller of a failed batch, of the same variant so that callers tell
/// a locked token from a lost one as they would with [`Signer::sign`]. (`std::io::Error` cannot be
/// cloned; its copy keeps the kind and the message.)
pub(super) fn duplicate(error: &Error) -> Error {
    match error {
        Error::WrongPin { token } => Error::WrongPin {
            token: token.clone(),
        },
        Error::TokenLocked { token } => Error::TokenLocked {
            token: token.clone(),
        },
        Error::NoSuchToken {
            label,
            module,
            present,
        } => Error::NoSuchToken {
            label: label.clone(),
            module: module.clone(),
            present: present.clone(),
        },
        Error::NoSuchKey { label, kind, store } => Error::NoSuchKey {
            label: label.clone(),
            kind,
            store: store.clone(),
        },
        Error::KeyExists { label, store } => Error::KeyExists {
            label: label.clone(),
            store: store.clone(),
        },
        Error::MechanismNotSupported {
            token,
            mechanism,
            algorithm,
        } => Error::MechanismNotSupported {
            token: token.clone(),
            mechanism: mechanism.clone(),
            algorithm: algorithm.clone(),
        },
        Error::AlgorithmMismatch {
            label,
            key_type,
            algorithm,
        } => Error::AlgorithmMismatch {
            label: label.clone(),
            key_type: key_type.clone(),
            algorithm: algorithm.clone(),
        },
        Error::Pin {
            source_name,
            reason,
        } => Error::Pin {
            source_name: source_name.clone(),
            reason: reason.clone(),
        },
        Error::Config { key, value, reason } => Error::Config {
            key,
            value: value.clone(),
            reason: reason.clone(),
        },
        Error::Module { module, reason } => Error::Module {
            module: module.clone(),
            reason: reason.clone(),
        },
        Error::Pkcs11 {
            token,
            operation,
            reason,
        } => Error::Pkcs11 {
            token: token.clone(),
            operation,
            reason: reason.clone(),
        },
        Error::TokenUnavailable {
            token,
            attempts,
            reason,
        } => Error::TokenUnavailable {
            token: token.clone(),
            attempts: *attempts,
            reason: reason.clone(),
        },
        Error::KeyFile { path, source } => Error::KeyFile {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Crypto { operation, reason } => Error::Crypto {
            operation,
            reason: reason.clone(),
        },
        Error::BatchSignerStopped { label } => Error::BatchSignerStopped {
            label: label.clone(),
        },
        Error::Decode { what, reason } => Error::Decode {
            what,
            reason: reason.clone(),
        },
        Error::BadSignature { algorithm, reason } => Error::BadSignature {
            algorithm: algorithm.clone(),
            reason,
        },
        Error::Unwrap { label, store } => Error::Unwrap {
            label: label.clone(),
            store: store.clone(),
        },
        Error::Unreachable(what) => Error::Unreachable(what),
    }
}
