//! Building an aggregation round (`round.rs`: push every request, close: the tree) in leaves per
//! second on one core, beside the raw rate of SHA-256 over 64-byte inputs on the same core in
//! the same run: `sha2` (the yardstick and what the round hashes with) and OpenSSL. A
//! round of n leaves computes 2n − 1 hashes (one leaf hash over the request's imprint, metadata
//! and level, one block; then n − 1 inner nodes over two imprints and a level, two blocks, as
//! a 64-byte input is), so hashing alone caps a round at about 2/3 of the raw rate.
//!
//! `{n}-leaves` is a round as the service runs it: the requests come in submissions of up to
//! 24 (one KSI PDU's, see [`build`]), and the round fills the arrays of an earlier round ([`Recycler`]),
//! sized from the round before, so it never reallocates as it fills nor takes fresh pages from
//! the operating system; `{n}-leaves-fresh-arrays` allocates its arrays anew (sized), as
//! rounds did before the recycler; `{n}-leaves-unsized` starts empty and grows, as the
//! service's first round does.
//!
//! `round/chains` reads every request's aggregation chain out of a closed round, the work the
//! service spreads over the answering tasks (one chain per answer).
//!
//! `ops/bench.sh --workspace --bench round`
// A benchmark: failing loudly is fine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use backbone_timestamping::round::{ALGORITHM, ClientId, Limits, Recycler, Request, Round};
use backbone_timestamping_verify::imprint::HashAlgorithm;
use criterion::{Criterion, Throughput, criterion_group};
use sha2::{Digest, Sha256};

/// A round time well inside SHA-256's trusted period.
const AT: u64 = 1_790_000_000;

/// Requests per submission: the most a KSI aggregator PDU may carry to this service
/// (`http::MAX_REQUESTS_PER_PDU`).
const SUBMISSION: usize = 24;

/// `n` requests from one client.
fn requests(n: u32) -> Vec<Request> {
    let client_id = ClientId::from("anon");
    (0..n)
        .map(|i| Request {
            hash: ALGORITHM.hash(&[&i.to_be_bytes()]).unwrap().into(),
            level: 0,
            client_id: client_id.clone(),
        })
        .collect()
}

/// The time of `iters` rounds over `requests`, each started with `start`: the round's creation,
/// every push and its close (the closed round dropped), as the service builds a round.
///
/// The requests come as the service receives them: in submissions of [`SUBMISSION`], each
/// vector made just before the round takes it (untimed: in the service, the PDU decoder's
/// output, still in the cache) and freed as the round takes its requests (timed). Made all at
/// once before the round, 65,536 requests (5.8 MB) would be out of the cache when the round
/// reads them, which no request to the service is. The clock is read around each submission,
/// about 1 % of the time measured.
fn build(iters: u64, requests: &[Request], start: impl Fn() -> Round) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let timer = Instant::now();
        let mut round = start();
        total += timer.elapsed();
        for chunk in requests.chunks(SUBMISSION) {
            let submission = chunk.to_vec();
            let timer = Instant::now();
            for request in &submission {
                round.push(request, AT).unwrap();
            }
            drop(submission);
            total += timer.elapsed();
        }
        let timer = Instant::now();
        black_box(round.close(AT).unwrap().root());
        total += timer.elapsed();
    }
    total
}

fn bench(c: &mut Criterion) {
    let input = [0x5au8; 64];
    let mut raw = c.benchmark_group("round/raw-sha256-64B");
    raw.throughput(Throughput::Elements(1));
    raw.warm_up_time(Duration::from_secs(1));
    raw.measurement_time(Duration::from_secs(3));
    raw.bench_function("sha2", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(&input))))
    });
    raw.bench_function("openssl", |b| {
        b.iter(|| black_box(openssl::sha::sha256(black_box(&input))))
    });
    raw.bench_function("imprint-hash", |b| {
        b.iter(|| black_box(HashAlgorithm::Sha256.hash(&[black_box(&input)]).unwrap()))
    });
    raw.finish();

    for n in [1_024u32, 65_536] {
        let batch = requests(n);
        let mut group = c.benchmark_group("round/build");
        group.throughput(Throughput::Elements(u64::from(n)));
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(if n > 10_000 { 10 } else { 3 }));
        group.sample_size(10);
        // As the service runs: each round fills the arrays of an earlier one, sized from the
        // round before; the closed round is dropped inside the timing, which hands its arrays
        // back.
        let recycler = Recycler::new();
        group.bench_function(format!("{n}-leaves"), |b| {
            b.iter_custom(|iters| {
                build(iters, &batch, || {
                    Round::recycled(Limits::default(), batch.len(), &recycler)
                })
            });
        });
        // The same with arrays fresh from the allocator each round (as before the recycler):
        // the difference is the page faults of about 100 bytes a request.
        group.bench_function(format!("{n}-leaves-fresh-arrays"), |b| {
            b.iter_custom(|iters| {
                build(iters, &batch, || {
                    Round::with_capacity(Limits::default(), batch.len())
                })
            });
        });
        // A round that starts empty and grows its arrays as it fills (the first round).
        group.bench_function(format!("{n}-leaves-unsized"), |b| {
            b.iter_custom(|iters| build(iters, &batch, || Round::new(Limits::default())));
        });
        let mut round = Round::new(Limits::default());
        for request in &batch {
            round.push(request, AT).unwrap();
        }
        let closed = round.close(AT).unwrap();
        group.bench_function(format!("{n}-leaves-every-chain"), |b| {
            b.iter(|| {
                for i in 0..closed.len() {
                    black_box(closed.chain(i).unwrap());
                }
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
