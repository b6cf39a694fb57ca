//! RFC 3161 tokens per second (request parse, TSTInfo, CMS SignedData with its signed
//! attributes, one signature through the `Signer`) beside the raw signature rate of the same key
//! in the same run, on one thread and on two; for a software key (ring) and a SoftHSM2 token.
//! The difference between the two rates is the front end's own cost. (The calendar round a
//! token's hash then joins is not measured here: it is shared by every request of a second.)
//!
//! `ops/bench.sh --workspace --bench rfc3161`
// A benchmark: failing loudly is fine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../../hsm/tests/common/softhsm.rs"]
mod softhsm;

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use backbone_hsm::cert::{CertificateAuthority, Profile, Subject, Validity};
use backbone_hsm::pkcs11::Pkcs11KeyStore;
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_timestamping::cms::CmsSigner;
use backbone_timestamping::tsa::{self, Authority, Serials};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// About as long as the signed attributes of a token (content type, digest, time, ESSCertIDv2).
const MESSAGE: &[u8; 200] = &[0x31; 200];

/// `openssl ts -query -sha256 -cert` of a document: SHA-256 imprint, 64-bit nonce, certReq.
fn request() -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(1);
            w.next().write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&yasna::models::ObjectIdentifier::from_slice(
                            backbone_timestamping::cms::OID_SHA256,
                        ));
                    w.next().write_null();
                });
                w.next().write_bytes(&[0x5a; 32]);
            });
            w.next().write_u64(0x1234_5678_9abc_def0);
            w.next().write_bool(true);
        });
    })
}

fn authority(ca: &dyn Signer, key: Arc<dyn Signer>) -> Authority {
    let not_before = SystemTime::now() - Duration::from_secs(60);
    let validity = |n: u8| Validity {
        not_before,
        not_after: not_before + Duration::from_secs(86_400),
        serial: vec![n],
    };
    let subject = |cn: &str| Subject {
        common_name: cn.into(),
        ..Subject::default()
    };
    let ca = CertificateAuthority::self_signed(ca, &subject("bench CA"), &validity(1)).unwrap();
    let certificate = ca
        .issue(
            key.public_key(),
            &subject("bench TSA"),
            Profile::TimeStamping,
            &validity(2),
        )
        .unwrap();
    Authority::new(
        CmsSigner::new(key, &certificate, Vec::new()).unwrap(),
        tsa::Config::default(),
        Serials::new(1),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let software = SoftwareKeyStore::open(dir.path()).unwrap();
    software.generate("ca", KeyType::EcP256).unwrap();
    software.generate("tsa", KeyType::EcP256).unwrap();
    let ca = software.signer("ca", None).unwrap();
    let token = softhsm::token("rfc3161");
    let pkcs11 = Pkcs11KeyStore::open(&token.config, token.pin()).unwrap();
    pkcs11.generate("tsa", KeyType::EcP256).unwrap();
    let cases: [(&str, Arc<dyn Signer>); 2] = [
        ("software-ecdsa-p256", software.signer("tsa", None).unwrap()),
        ("softhsm-ecdsa-p256", pkcs11.signer("tsa", None).unwrap()),
    ];
    let request = request();

    for (name, signer) in cases {
        let authority = authority(ca.as_ref(), Arc::clone(&signer));
        let token = authority.respond(&request, 1_790_000_000, 123).unwrap();
        assert!(!token.der.is_empty());

        let mut group = c.benchmark_group(format!("rfc3161/{name}"));
        group.throughput(Throughput::Elements(1));
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        group.sample_size(30);
        group.bench_function("signature/1-thread", |b| {
            b.iter(|| black_box(signer.sign(MESSAGE).unwrap()))
        });
        group.bench_function("token/1-thread", |b| {
            b.iter(|| black_box(authority.respond(&request, 1_790_000_000, 123).unwrap()))
        });
        group.bench_function("signature/2-threads", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, || drop(black_box(signer.sign(MESSAGE).unwrap())))
            });
        });
        group.bench_function("token/2-threads", |b| {
            b.iter_custom(|iters| {
                two_threads(iters, || {
                    drop(black_box(
                        authority.respond(&request, 1_790_000_000, 123).unwrap(),
                    ))
                })
            });
        });
        group.finish();
    }
}

/// Runs `iters` calls of `f` spread over two threads; returns the wall time.
fn two_threads(iters: u64, f: impl Fn() + Sync) -> Duration {
    let start = Instant::now();
    thread::scope(|scope| {
        for t in 0..2u64 {
            let f = &f;
            let n = iters / 2 + (iters % 2) * t;
            scope.spawn(move || {
                for _ in 0..n {
                    f();
                }
            });
        }
    });
    start.elapsed()
}

criterion_group!(benches, bench);
criterion_main!(benches);
