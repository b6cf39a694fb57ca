use super::*;

fn sample() -> Archive {
    let proof = RecordProof {
        batch: 10,
        leaf_index: 1,
        batch_count: 3,
        path: vec![[4; 32], [5; 32]],
    };
    Archive {
        gateway: "EE/GOV/70000001/gw1".into(),
        from_ms: 1_764_000_000_000,
        to_ms: 1_764_000_060_000,
        first_seq: 11,
        end_seq: 13,
        prev_hash: [1; 32],
        last_hash: [2; 32],
        exported_at_ms: 1_764_000_100_000,
        certificates: vec![vec![0x30, 0x82, 0, 1], vec![0x30, 0x03]],
        batches: vec![Batch {
            first_seq: 10,
            count: 3,
            root: [9; 32],
            stamped_at_ms: 5,
            ksi_signature: vec![7; 50],
        }],
        records: vec![
            AuditRecord {
                encoded: b"BBLR-one".to_vec(),
                proof: Some(proof),
            },
            AuditRecord {
                encoded: b"BBLR-two".to_vec(),
                proof: None,
            },
        ],
    }
}

#[test]
fn round_trip_and_every_truncation_and_extension_refused() {
    let archive = sample();
    let bytes = archive.encode().unwrap();
    assert_eq!(Archive::decode(&bytes).unwrap(), archive);
    for cut in 0..bytes.len() {
        assert!(Archive::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.insert(bytes.len() - 32, 0);
    assert!(Archive::decode_unverified(&longer).is_err());
}

#[test]
fn a_changed_byte_is_caught_by_the_digest_but_still_decodes_unverified() {
    let bytes = sample().encode().unwrap();
    let at = bytes.windows(8).position(|w| w == b"BBLR-two").unwrap() + 5;
    let mut changed = bytes.clone();
    changed[at] ^= 0x20;
    assert_eq!(Archive::decode(&changed), Err(ArchiveError::Digest));
    let unverified = Archive::decode_unverified(&changed).unwrap();
    assert!(!unverified.digest_matches);
    assert_eq!(unverified.archive.records[1].encoded, b"BBLR-Two");
    assert!(Archive::decode_unverified(&bytes).unwrap().digest_matches);
}

#[test]
fn counts_are_checked_before_allocating() {
    let mut archive = sample();
    archive.certificates.clear();
    archive.batches.clear();
    archive.records.clear();
    let bytes = archive.encode().unwrap();
    // The certificate count sits 12 bytes before the digest (three empty counts).
    let at = bytes.len() - 32 - 12;
    for (count, tag) in [(u32::MAX, "too large"), (1000, "more than the bytes left")] {
        let mut b = bytes.clone();
        b[at..at + 4].copy_from_slice(&count.to_be_bytes());
        assert!(Archive::decode_unverified(&b).is_err(), "{tag}");
    }
    assert!(matches!(
        Archive::decode_unverified(b"BBAX"),
        Err(ArchiveError::NotArchive(_))
    ));
    let mut version = bytes.clone();
    version[4] = 2;
    assert!(matches!(
        Archive::decode_unverified(&version),
        Err(ArchiveError::NotArchive(_))
    ));
}

#[test]
fn limits_are_enforced_when_encoding() {
    let mut archive = sample();
    archive.gateway = "g".repeat(MAX_GATEWAY_LEN + 1);
    assert!(matches!(
        archive.encode(),
        Err(ArchiveError::TooLarge {
            what: "gateway",
            ..
        })
    ));
    let mut archive = sample();
    archive.certificates = vec![vec![0; record::MAX_BLOB_LEN + 1]];
    assert!(matches!(
        archive.encode(),
        Err(ArchiveError::TooLarge {
            what: "certificate",
            ..
        })
    ));
}
