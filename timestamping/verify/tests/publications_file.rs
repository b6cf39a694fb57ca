//! Publications file parsing and signature checks with the KSI conformance pack's files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::PathBuf;

use backbone_timestamping_verify::Error;
use backbone_timestamping_verify::publications_file::{PublicationsFile, TrustAnchors};

/// The conformance pack in this crate's `testdata/`. The manifest directory is read when the test runs,
/// not when it is compiled, so that a build cache shared between checkouts finds the right pack.
fn pack() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.join("testdata/ksi-test-pack")
}
const RESOURCES: &str = "policy-verification-signatures/resources";

fn read(name: &str) -> Vec<u8> {
    fs::read(pack().join(RESOURCES).join(name)).unwrap()
}

fn anchors() -> TrustAnchors {
    TrustAnchors::from_pem(&read("publications-file-trust-anchor.pem")).unwrap()
}

#[test]
fn default_file_verifies_at_its_creation_time() {
    let file = PublicationsFile::parse_unverified(&read("publications-file.bin")).unwrap();
    assert_eq!(file.created, 1_710_870_545);
    assert!(!file.certificates.is_empty() && !file.publications.is_empty());
    let at = i64::try_from(file.created).unwrap();
    let trusted = file.verify(&anchors(), at).unwrap();
    assert!(trusted.publication_after(1_710_452_040).is_some());
}

#[test]
fn default_file_is_not_trusted_after_its_signer_expired() {
    let file = PublicationsFile::parse_unverified(&read("publications-file.bin")).unwrap();
    // 2026-08-01, after the signing certificate's expiry on 2026-07-28.
    assert!(matches!(
        file.verify(&anchors(), 1_785_542_400),
        Err(Error::PublicationsFile { .. })
    ));
}

#[test]
fn signer_email_is_enforced() {
    let file = PublicationsFile::parse_unverified(&read("publications-file.bin")).unwrap();
    let at = i64::try_from(file.created).unwrap();
    let strict = anchors().with_signer_email("someone@example.org");
    assert!(matches!(
        file.verify(&strict, at),
        Err(Error::PublicationsFile { .. })
    ));
}

#[test]
fn any_changed_byte_breaks_the_signature() {
    let bytes = read("publications-file.bin");
    let file = PublicationsFile::parse_unverified(&bytes).unwrap();
    let at = i64::try_from(file.created).unwrap();
    // Change a byte inside the last publication's hash: still parses, no longer verifies.
    let hash = file
        .publications
        .last()
        .unwrap()
        .publication
        .hash
        .as_bytes()
        .to_vec();
    let offset = bytes.windows(hash.len()).rposition(|w| w == hash).unwrap() + 5;
    let mut tampered = bytes.clone();
    tampered[offset] ^= 1;
    let file = PublicationsFile::parse_unverified(&tampered).unwrap();
    assert!(file.verify(&anchors(), at).is_err());
}

#[test]
fn untrusted_anchor_is_rejected() {
    let file = PublicationsFile::parse_unverified(&read("publications-file-resigned.bin")).unwrap();
    let at = i64::try_from(file.created).unwrap();
    // Signed by the pack's self-signed certificate, which is not among the default anchors.
    assert!(file.clone().verify(&anchors(), at).is_err());
    let mut with_self_signed = anchors();
    with_self_signed
        .add_pem(&read(
            "cert-file-for-deprecated-algorithm-in-calendar-chain.pem",
        ))
        .unwrap();
    assert!(file.verify(&with_self_signed, at).is_ok());
}

#[test]
fn malformed_files_are_errors() {
    let bytes = read("publications-file.bin");
    assert!(PublicationsFile::parse_unverified(b"KSIPUBL").is_err());
    assert!(PublicationsFile::parse_unverified(b"NOTKSIPUBLF").is_err());
    for len in [8, 9, 20, bytes.len() - 1] {
        assert!(
            PublicationsFile::parse_unverified(&bytes[..len]).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
}
