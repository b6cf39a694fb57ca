//! Signatures per second through `Pkcs11Signer` against raw cryptoki calls on the same SoftHSM2
//! token, on one thread and on two. The raw calls sign with the token object (`raw`) and with a
//! session copy of it (`raw-session-copy`, what the signer signs with). The difference between
//! `raw-session-copy` and `signer` is the signer's overhead: session pool, key handle cache,
//! hashing, DER encoding of ECDSA signatures and recovery bookkeeping.
//!
//! `cargo bench -p backbone-hsm --bench pkcs11`
// A benchmark: failing loudly is fine.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../tests/common/softhsm.rs"]
mod softhsm;

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use backbone_hsm::pkcs11::Pkcs11KeyStore;
use backbone_hsm::{KeyStore, KeyType, SignatureAlgorithm, Signer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest, Sha256};

const MESSAGE: &[u8] = b"a referral, a prescription or a lab result: about this long";

const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

struct Case {
    name: &'static str,
    key_type: KeyType,
    algorithm: SignatureAlgorithm,
}

const CASES: [Case; 5] = [
    Case {
        name: "ecdsa-p256",
        key_type: KeyType::EcP256,
        algorithm: SignatureAlgorithm::EcdsaP256Sha256,
    },
    Case {
        name: "ed25519",
        key_type: KeyType::Ed25519,
        algorithm: SignatureAlgorithm::Ed25519,
    },
    Case {
        name: "rsa2048-pkcs1",
        key_type: KeyType::Rsa2048,
        algorithm: SignatureAlgorithm::RsaPkcs1Sha256,
    },
    Case {
        name: "rsa2048-pss",
        key_type: KeyType::Rsa2048,
        algorithm: SignatureAlgorithm::RsaPssSha256,
    },
    Case {
        name: "rsa3072-pkcs1",
        key_type: KeyType::Rsa3072,
        algorithm: SignatureAlgorithm::RsaPkcs1Sha256,
    },
];

/// What a raw caller hands the token: the digest (with a DigestInfo for PKCS#1), or the message
/// for Ed25519.
fn raw_input(algorithm: SignatureAlgorithm) -> Vec<u8> {
    let digest = Sha256::digest(MESSAGE);
    match algorithm {
        SignatureAlgorithm::EcdsaP256Sha256 | SignatureAlgorithm::RsaPssSha256 => digest.to_vec(),
        SignatureAlgorithm::RsaPkcs1Sha256 => [&SHA256_DIGEST_INFO[..], &digest].concat(),
        SignatureAlgorithm::Ed25519 => MESSAGE.to_vec(),
    }
}

fn raw_sign(
    session: &Session,
    key: ObjectHandle,
    algorithm: SignatureAlgorithm,
    input: &[u8],
) -> Vec<u8> {
    let result = match algorithm {
        SignatureAlgorithm::EcdsaP256Sha256 => session.sign(&Mechanism::Ecdsa, key, input),
        SignatureAlgorithm::Ed25519 => session.sign(
            &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            key,
            input,
        ),
        SignatureAlgorithm::RsaPkcs1Sha256 => session.sign(&Mechanism::RsaPkcs, key, input),
        SignatureAlgorithm::RsaPssSha256 => {
            let params = PkcsPssParams {
                hash_alg: MechanismType::SHA256,
                mgf: PkcsMgfType::MGF1_SHA256,
                s_len: 32.into(),
            };
            session.sign(&Mechanism::RsaPkcsPss(params), key, input)
        }
    };
    result.unwrap()
}

/// Runs `iters` calls of `f` spread over two threads; returns the wall time.
fn two_threads(iters: u64, f: impl Fn(usize) + Sync) -> Duration {
    let start = Instant::now();
    thread::scope(|scope| {
        for t in 0..2 {
            let f = &f;
            let n = iters / 2 + (iters % 2) * (t as u64);
            scope.spawn(move || {
                for _ in 0..n {
                    f(t);
                }
            });
        }
    });
    start.elapsed()
}

fn raw_context(label: &str) -> (Pkcs11, Slot) {
    let context = Pkcs11::new(softhsm::MODULE).unwrap();
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| context.get_token_info(*slot).unwrap().label() == label)
        .unwrap();
    (context, slot)
}

fn bench(c: &mut Criterion) {
    let token = softhsm::token("bench");
    let store = Pkcs11KeyStore::open(&token.config, token.pin()).unwrap();
    let (context, slot) = raw_context(&token.label);
    // Two raw sessions, one per thread, like the store's pool of two.
    let raw: Vec<Session> = (0..2)
        .map(|_| context.open_rw_session(slot).unwrap())
        .collect();
    match raw[0].login(
        UserType::User,
        Some(&AuthPin::from(softhsm::USER_PIN.to_owned())),
    ) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    // Sessions are Send but not Sync: each thread borrows its own through a mutex it alone locks.
    let raw: Vec<std::sync::Mutex<Session>> = raw.into_iter().map(std::sync::Mutex::new).collect();

    for case in &CASES {
        let label = case.key_type.name();
        if store.public_key(label).is_err() {
            store.generate(label, case.key_type).unwrap();
        }
        let signer: Arc<dyn Signer> = store.signer(label, Some(case.algorithm)).unwrap();
        let key = {
            let session = raw[0].lock().unwrap();
            let template = [
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ];
            session.find_objects(&template).unwrap()[0]
        };
        // The signer signs with a session copy of the key; the raw calls sign with the token
        // object, and with such a copy, to show what the copy saves.
        let copy = raw[0]
            .lock()
            .unwrap()
            .copy_object(key, &[Attribute::Token(false)])
            .unwrap();
        let input = raw_input(case.algorithm);
        let signature = signer.sign(MESSAGE).unwrap();
        signer
            .public_key()
            .verify(case.algorithm, MESSAGE, &signature)
            .unwrap();

        let mut group = c.benchmark_group(format!("pkcs11/{}", case.name));
        group.throughput(Throughput::Elements(1));
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        if case.key_type == KeyType::Rsa3072 {
            group.sample_size(10);
        } else {
            group.sample_size(30);
        }
        group.bench_function("raw/1-thread", |b| {
            let session = raw[0].lock().unwrap();
            b.iter(|| black_box(raw_sign(&session, key, case.algorithm, &input)));
        });
        group.bench_function("raw-session-copy/1-thread", |b| {
            let session = raw[0].lock().unwrap();
            b.iter(|| black_box(raw_sign(&session, copy, case.algorithm, &input)));
        });
        group.bench_function("signer/1-thread", |b| {
            b.iter(|| black_box(signer.sign(MESSAGE).unwrap()))
        });
        group.bench_function("raw/2-threads", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |t| {
                    let session = raw[t].lock().unwrap();
                    black_box(raw_sign(&session, key, case.algorithm, &input));
                })
            });
        });
        group.bench_function("raw-session-copy/2-threads", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |t| {
                    let session = raw[t].lock().unwrap();
                    black_box(raw_sign(&session, copy, case.algorithm, &input));
                })
            });
        });
        group.bench_function("signer/2-threads", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |_| drop(black_box(signer.sign(MESSAGE).unwrap())))
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
