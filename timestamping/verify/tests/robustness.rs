//! Mutated pack files through every decoder and the verifier: errors are fine, panics are not.
//! A cheap stand-in for the fuzz targets in `fuzz/`, run with every `cargo test`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::{Path, PathBuf};

use backbone_timestamping_verify::fuzzing;
use backbone_timestamping_verify::signature::Signature;
use backbone_timestamping_verify::verify::{self, Context, Policy};

/// The conformance pack in this crate's `testdata/`. The manifest directory is read when the test runs,
/// not when it is compiled, so that a build cache shared between checkouts finds the right pack.
fn pack() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.join("testdata/ksi-test-pack")
}
const MUTATIONS_PER_FILE: usize = 200;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![pack()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e == "ksig" || e == "tlv" || e == "bin")
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.below(3) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len());
        match rng.below(5) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = rng.next() as u8,
            2 => out.truncate(at),
            3 => out.insert(at, rng.next() as u8),
            _ => {
                out.remove(at);
            }
        }
    }
    out
}

#[test]
fn mutated_inputs_do_not_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let context = Context {
        extending_permitted: true,
        ..Context::default()
    };
    for path in files() {
        let bytes = fs::read(Path::new(&path)).unwrap();
        for _ in 0..MUTATIONS_PER_FILE {
            let input = mutate(&mut rng, &bytes);
            fuzzing::tlv(&input);
            fuzzing::signature(&input);
            fuzzing::publications_file(&input);
            fuzzing::pdu(&input);
            fuzzing::publication_string(&input);
            if let Ok(signature) = Signature::decode(&input) {
                // Its own calendar chain stands in for an extender's answer.
                let context = Context {
                    extended_calendar: signature.calendar_chain(),
                    ..context
                };
                for policy in [
                    Policy::Internal,
                    Policy::Calendar,
                    Policy::KeyBased,
                    Policy::UserPublication,
                    Policy::Default,
                ] {
                    let _ = verify::verify(&signature, policy, &context);
                }
            }
        }
    }
}
