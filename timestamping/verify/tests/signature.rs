//! Signature decoding and canonical encoding, over every signature in the KSI conformance pack.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::PathBuf;

use backbone_timestamping_verify::signature::Signature;
use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};

/// The conformance pack in this crate's `testdata/`. The manifest directory is read when the test runs,
/// not when it is compiled, so that a build cache shared between checkouts finds the right pack.
fn pack() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.join("testdata/ksi-test-pack")
}

fn pack_files(extension: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![pack()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == extension) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn decoded_signatures_survive_encode_and_decode() {
    let mut decoded = 0;
    for path in pack_files("ksig").into_iter().chain(pack_files("tlv")) {
        let Ok(signature) = Signature::decode(&fs::read(&path).unwrap()) else {
            continue;
        };
        let bytes = signature
            .encode()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let again = Signature::decode(&bytes)
            .unwrap_or_else(|e| panic!("{}: re-encoded form: {e}", path.display()));
        assert_eq!(again, signature, "{}", path.display());
        assert_eq!(
            again.encode().unwrap(),
            bytes,
            "{}: encoding is not canonical",
            path.display()
        );
        decoded += 1;
    }
    assert!(decoded > 100, "only {decoded} signatures decoded");
}

#[test]
fn re_encoded_signatures_verify_like_the_originals() {
    let dir = pack().join("valid-signatures");
    for path in pack_files("ksig")
        .into_iter()
        .filter(|p| p.starts_with(&dir))
    {
        let original = Signature::decode(&fs::read(&path).unwrap()).unwrap();
        let copy = Signature::decode(&original.encode().unwrap()).unwrap();
        let context = Context::default();
        let (a, b) = (
            verify::verify(&original, Policy::Internal, &context),
            verify::verify(&copy, Policy::Internal, &context),
        );
        assert_eq!(a.outcome, Outcome::Ok, "{}: {a}", path.display());
        assert_eq!(a, b, "{}", path.display());
    }
}

#[test]
fn truncated_signatures_are_errors_not_panics() {
    let bytes = fs::read(pack().join("valid-signatures/signature-extended.ksig")).unwrap();
    for len in 0..bytes.len() {
        assert!(
            Signature::decode(&bytes[..len]).is_err(),
            "prefix of {len} bytes decoded"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(
        Signature::decode(&longer).is_err(),
        "trailing byte accepted"
    );
}
