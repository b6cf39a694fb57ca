//! Verifications per second on one core under the internal policy (`verify::verify` with
//! `Policy::Internal` and the document hash given), for a signature this service issues and for
//! a KSI production signature from the conformance pack, beside the raw rate of as many SHA-256
//! computations over 64-byte inputs as the signature's hash chains have steps, in the same run
//! (the most a verifier that only hashed could do). Each is measured on the decoded signature
//! and from its bytes (decode, then verify), as a verifier receives it.
//!
//! `ops/bench.sh --workspace --profile dev --bench verify`
// A benchmark: failing loudly is fine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_timestamping::authority::{CalendarSigner, issue_certificates};
use backbone_timestamping::calendar::store::MemoryStore;
use backbone_timestamping::calendar::{Calendar, CalendarStore};
use backbone_timestamping::http::hex_decode;
use backbone_timestamping::round::{ALGORITHM, InputHash, Limits, Request, Round};
use backbone_timestamping_verify::Signature;
use backbone_timestamping_verify::imprint::Imprint;
use backbone_timestamping_verify::publication::PublicationData;
use backbone_timestamping_verify::signature::Anchor;
use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};
use criterion::{Criterion, Throughput, criterion_group};
use sha2::{Digest, Sha256};

const AT: u64 = 1_790_000_000;
/// Requests in the round the service's signature comes from: about one second at the sized
/// load, so its aggregation chain is as long as in production (17 links).
const ROUND: u32 = 65_536;

/// A signature as the service issues it: a round of [`ROUND`] requests, the calendar from 1970
/// to `AT` in memory, the calendar root signed with a software ECDSA P-256 key.
fn service_signature() -> (Vec<u8>, Imprint) {
    let dir = tempfile::tempdir().unwrap();
    let keys = SoftwareKeyStore::open(dir.path()).unwrap();
    keys.generate("ca", KeyType::EcP256).unwrap();
    keys.generate("calendar", KeyType::EcP256).unwrap();
    let ca: Arc<dyn Signer> = keys.signer("ca", None).unwrap();
    let key: Arc<dyn Signer> = keys.signer("calendar", None).unwrap();
    let not_before = SystemTime::now() - Duration::from_secs(3600);
    let (_, certificate) = issue_certificates(ca.as_ref(), key.as_ref(), not_before, 365).unwrap();
    let signer = CalendarSigner::new(key, &certificate).unwrap();
    let mut round = Round::new(Limits::default());
    let document = ALGORITHM
        .hash(&[b"referral 2026-11-26 patient 4711"])
        .unwrap();
    round
        .push(
            &Request {
                hash: InputHash::from(&document),
                level: 0,
                client_id: "anon".into(),
            },
            AT,
        )
        .unwrap();
    for i in 1..ROUND {
        round
            .push(
                &Request {
                    hash: ALGORITHM.hash(&[&i.to_be_bytes()]).unwrap().into(),
                    level: 0,
                    client_id: "anon".into(),
                },
                AT,
            )
            .unwrap();
    }
    let closed = round.close(AT).unwrap();
    let store: Box<dyn CalendarStore> = Box::new(MemoryStore::new());
    let mut calendar = Calendar::open(store).unwrap();
    let root = calendar.append(AT, closed.root().as_ref()).unwrap();
    let chain = calendar.chain(AT, AT).unwrap();
    let record = signer.sign(PublicationData::new(AT, root)).unwrap();
    let chain0 = closed.chain(0).unwrap();
    let signature = Signature::new(
        None,
        vec![chain0],
        Some((chain, Anchor::CalendarAuth(record))),
    )
    .unwrap();
    (signature.encode().unwrap(), document)
}

/// `signature-extended.ksig` of the pack's valid signatures: a KSI production signature (four
/// aggregation chains, a calendar chain to a publication, a publication record).
fn pack_signature() -> Option<(Vec<u8>, Imprint)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("verify/testdata/ksi-test-pack/valid-signatures/signature-extended.ksig");
    let bytes = std::fs::read(&path).ok()?;
    let hash =
        hex_decode("0111A700B0C8066C47ECBA05ED37BC14DCADB238552D86C659342D1D7E87B8772D").unwrap();
    Some((bytes, Imprint::from_bytes(&hash).unwrap()))
}

/// Hash steps a verifier computes: one per aggregation link, one per calendar link.
fn steps(signature: &Signature) -> usize {
    let aggregation: usize = signature
        .aggregation_chains()
        .iter()
        .map(|c| c.links.len())
        .sum();
    aggregation + signature.calendar_chain().map_or(0, |c| c.links.len())
}

fn bench(c: &mut Criterion) {
    let mut cases = vec![("service", service_signature())];
    match pack_signature() {
        Some(pack) => cases.push(("ksi-pack-signature-extended", pack)),
        None => eprintln!("conformance pack not found beside the repository; its row is skipped"),
    }
    let input = [0x5au8; 64];
    for (name, (bytes, document)) in cases {
        let signature = Signature::decode(&bytes).unwrap();
        let context = Context {
            document_hash: Some(&document),
            ..Context::default()
        };
        assert_eq!(
            verify::verify(&signature, Policy::Internal, &context).outcome,
            Outcome::Ok,
            "{name}"
        );
        let steps = steps(&signature);
        eprintln!("{name}: {} bytes, {steps} hash steps", bytes.len());
        let mut group = c.benchmark_group(format!("verify/{name}"));
        group.throughput(Throughput::Elements(1));
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        group.bench_function(format!("raw-sha256-64B-x{steps}"), |b| {
            b.iter(|| {
                for _ in 0..steps {
                    black_box(Sha256::digest(black_box(&input)));
                }
            });
        });
        group.bench_function("internal/decoded", |b| {
            b.iter(|| black_box(verify::verify(&signature, Policy::Internal, &context)))
        });
        group.bench_function("internal/from-bytes", |b| {
            b.iter(|| {
                let signature = Signature::decode(black_box(&bytes)).unwrap();
                black_box(verify::verify(&signature, Policy::Internal, &context))
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench);

fn main() {
    // `cargo test --all-targets` (ops/test.sh) runs bench binaries without `--bench`: this one
    // takes seconds to set up, so it only starts and exits there, and runs under `cargo bench`.
    if std::env::args().any(|a| a == "--bench") {
        benches();
        criterion::Criterion::default()
            .configure_from_args()
            .final_summary();
    }
}
