//! Every parser of this crate on its fuzz seeds and on thousands of deterministic near-misses of
//! them: each input decodes or gives an error, never a panic. The cargo-fuzz targets in `hsm/fuzz/`
//! explore further; this replay keeps the same guarantee in every CI run.

use std::path::PathBuf;

use backbone_hsm::PublicKey;
use backbone_hsm::batch::BatchSignature;
use backbone_hsm::cert::verify_csr;
use backbone_hsm::software::SoftwareSigner;

fn seed(name: &str) -> Vec<u8> {
    // Read when the test runs, not when it is compiled: a build cache shared between checkouts
    // must not point at another checkout's files.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let path = manifest.join("src/testdata").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Truncations, every single-bit flip, and pseudo-random byte rewrites, insertions and deletions.
fn near_misses(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for len in 0..seed.len() {
        out.push(seed[..len].to_vec());
    }
    for i in 0..seed.len() * 8 {
        let mut m = seed.to_vec();
        m[i / 8] ^= 1 << (i % 8);
        out.push(m);
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let mut m = seed.to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % (m.len() + 1);
            match next() % 3 {
                0 if at < m.len() => m[at] = next() as u8,
                1 => m.insert(at, next() as u8),
                _ if at < m.len() => {
                    m.remove(at);
                }
                _ => m.push(next() as u8),
            }
        }
        out.push(m);
    }
    out
}

#[test]
fn public_key_decoder() {
    for name in ["fuzz-seed-ec-p256.spki", "fuzz-seed-ed25519.spki"] {
        let seed = seed(name);
        assert_eq!(
            PublicKey::from_spki_der(&seed).unwrap().spki_der(),
            &seed[..]
        );
        for input in near_misses(&seed) {
            if let Ok(key) = PublicKey::from_spki_der(&input) {
                assert_eq!(key.spki_der(), &input[..], "only canonical DER is accepted");
            }
        }
    }
}

#[test]
fn key_file_decoder() {
    for name in ["fuzz-seed-ec-p256.p8", "fuzz-seed-ed25519.p8"] {
        let seed = seed(name);
        SoftwareSigner::from_pkcs8("seed", &seed, None).unwrap();
        for input in near_misses(&seed) {
            let _ = SoftwareSigner::from_pkcs8("fuzz", &input, None);
        }
    }
}

#[test]
fn csr_decoder() {
    let seed = seed("fuzz-seed.csr");
    let csr = verify_csr(&seed).unwrap();
    assert_eq!(csr.subject.common_name, "90001234");
    let mut accepted = 0;
    for input in near_misses(&seed) {
        if verify_csr(&input).is_ok() {
            accepted += 1;
        }
    }
    // A changed byte inside the signed part or the signature must not pass.
    assert!(accepted < 50, "{accepted} altered requests were accepted");
}

#[test]
fn batch_signature_decoder() {
    let seed = seed("batch-signature-v1.bin");
    assert_eq!(BatchSignature::from_bytes(&seed).unwrap().to_bytes(), seed);
    for input in near_misses(&seed) {
        if let Ok(signature) = BatchSignature::from_bytes(&input) {
            assert_eq!(signature.to_bytes(), input, "the encoding is canonical");
        }
    }
}
