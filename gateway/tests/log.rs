//! The message log through its public API: append and read back, encryption at rest, the hash
//! chain across restarts, tampering caught by offline verification, the usage index, group
//! commit, batch timestamping against an in-process timestamping service, and fail-closed when
//! timestamping fails too long.
// clippy.toml lets `#[test]` functions unwrap; the helpers below are test code too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use backbone_gateway::log::batch;
use backbone_gateway::log::store::{
    CF_BATCH_HASHES, CF_BATCHES, CF_BODIES, CF_PROOFS, CF_RECORDS, COLUMN_FAMILIES,
};
use backbone_gateway::log::verify::{self, VerifyError};
use backbone_gateway::log::{
    Batch, Kind, LogConfig, LogError, LogMetrics, MessageLog, NewRecord, Side, SignerCertificate,
};
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{KeyStore, KeyType, Signer, Wrapper};
use backbone_timestamping::authority::{CalendarSigner, issue_certificates};
use backbone_timestamping::calendar::rocks::RocksStore;
use backbone_timestamping::calendar::{Calendar, CalendarStore};
use backbone_timestamping::client;
use backbone_timestamping::http::{self, PduAuth};
use backbone_timestamping::service::{self, Running};
use sha2::{Digest, Sha256};

const BODY_MARKER: &[u8] = b"diagnosis: J45.901 asthma, uncontrolled";

struct Keys {
    wrapper: Arc<dyn Wrapper>,
    _dir: tempfile::TempDir,
}

fn new_keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let store = SoftwareKeyStore::open(dir.path().join("keys")).unwrap();
    store.generate_wrapping_key("message-log").unwrap();
    Keys {
        wrapper: store.wrapper("message-log").unwrap(),
        _dir: dir,
    }
}

/// A log without timestamping in `dir`, holding `n` request records about `subject`.
async fn log_with_requests(dir: &Path, keys: &Keys, n: u64, subject: Option<&str>) -> MessageLog {
    let log = MessageLog::open(config(dir, None), keys.wrapper.clone()).unwrap();
    for n in 0..n {
        log.append(vec![record(n, Kind::Request, subject)])
            .await
            .unwrap();
    }
    log
}

fn config(dir: &Path, timestamping: Option<SocketAddr>) -> LogConfig {
    LogConfig {
        dir: dir.to_owned(),
        batch_interval: Duration::from_millis(100),
        max_timestamping_failure: Duration::from_millis(800),
        timestamping,
    }
}

fn record(n: u64, kind: Kind, subject: Option<&str>) -> NewRecord {
    let mut body = format!("{n}: ").into_bytes();
    body.extend_from_slice(BODY_MARKER);
    NewRecord {
        side: Side::Provider,
        kind,
        message_id: format!("msg-{n:04}"),
        client: "EE/GOV/70000001/hospital-ehr".into(),
        service: "EE/GOV/70000002/pharmacy/prescriptions".into(),
        user_id: Some("EE38001085718".into()),
        data_subject: subject.map(str::to_owned),
        purpose_of_use: Some("treatment".into()),
        emergency: n % 5 == 0,
        descriptor: format!("BBRQ descriptor {n}").into_bytes(),
        signature: vec![0xa5; 90],
        signer_certificate: vec![0x30; 400],
        body,
        logged_at_ms: 1_764_000_000_000 + n,
        answers: None,
    }
}

/// Waits up to `patience` for `check` to hold.
async fn eventually(patience: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn appended_records_read_back_decrypted_and_linked() {
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    let log = MessageLog::open(config(dir.path(), None), keys.wrapper.clone()).unwrap();
    let seqs = log
        .append(vec![
            record(1, Kind::Request, Some("EE49002124277")),
            record(2, Kind::Response, Some("EE49002124277")),
        ])
        .await
        .unwrap();
    assert_eq!(seqs, [0, 1]);
    let request = log.record(0).unwrap().unwrap();
    let response = log.record(1).unwrap().unwrap();
    assert!(log.record(2).unwrap().is_none());
    let expected = record(1, Kind::Request, Some("EE49002124277"));
    assert_eq!(request.body, expected.body);
    assert_eq!(request.record.message_id, "msg-0001");
    assert_eq!(request.record.descriptor, expected.descriptor);
    assert_eq!(request.record.signature, expected.signature);
    assert_eq!(request.signer_certificate, expected.signer_certificate);
    assert_eq!(
        request.record.signer_certificate,
        SignerCertificate::Sha256(Sha256::digest(&expected.signer_certificate).into()),
        "records name their certificate by hash"
    );
    assert_eq!(
        (request.record.side, request.record.kind),
        (Side::Provider, Kind::Request)
    );
    assert_eq!(request.record.prev_hash, [0; 32]);
    assert_eq!(
        response.record.prev_hash, request.hash,
        "each record links to the one before"
    );
    assert!(request.stamp.is_none());
    let status = log.status();
    assert_eq!(
        (status.records, status.last_seq, status.unstamped),
        (2, Some(1), 2)
    );
    assert!(
        status.accepting,
        "without a timestamping service the log never refuses"
    );
    log.check_accepting().unwrap();
    assert!(log.append(Vec::new()).await.unwrap().is_empty());

    // Over the limits: refused, nothing written.
    let mut huge = record(3, Kind::Request, None);
    huge.client = "x".repeat(5000);
    assert!(matches!(
        log.append(vec![huge]).await,
        Err(LogError::TooLarge { what: "client", .. })
    ));
    assert_eq!(log.status().records, 2);
}

#[tokio::test]
async fn bodies_are_not_stored_in_plaintext() {
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    let log = MessageLog::open(config(dir.path(), None), keys.wrapper.clone()).unwrap();
    for n in 0..20 {
        log.append(vec![record(n, Kind::Request, Some("EE49002124277"))])
            .await
            .unwrap();
    }
    drop(log);
    let everything = read_dir_bytes(dir.path());
    let contains = |needle: &[u8]| everything.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(b"msg-0007"),
        "metadata is stored in the clear, so the search does work"
    );
    assert!(
        !contains(BODY_MARKER),
        "a body was found in plaintext in the log directory"
    );
    assert!(
        !contains(&BODY_MARKER[..16]),
        "part of a body was found in plaintext"
    );
}

#[tokio::test]
async fn the_chain_continues_across_reopen_and_verifies() {
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_requests(dir.path(), &keys, 3, None).await;
    let last_before = log.record(2).unwrap().unwrap().hash;
    drop(log);
    let log = MessageLog::open(config(dir.path(), None), keys.wrapper.clone()).unwrap();
    assert_eq!(
        log.append(vec![record(3, Kind::Request, None)])
            .await
            .unwrap(),
        [3]
    );
    assert_eq!(
        log.record(3).unwrap().unwrap().record.prev_hash,
        last_before
    );
    assert_eq!(
        log.record(1).unwrap().unwrap().body,
        record(1, Kind::Request, None).body,
        "same data key"
    );
    let report = verify::verify(&log.export(0, 10).unwrap(), None).unwrap();
    assert_eq!(
        (report.records, report.stamped, report.unstamped.len()),
        (4, 0, 4)
    );
    // An export of a later stretch links to the hash the earlier one ended with.
    let first = verify::verify(&log.export(0, 2).unwrap(), None).unwrap();
    let rest = verify::verify(&log.export(2, 4).unwrap(), first.last_hash).unwrap();
    assert_eq!(rest.first_seq, Some(2));
    assert!(matches!(
        verify::verify(&log.export(2, 4).unwrap(), Some([9; 32])),
        Err(VerifyError::BrokenLink { seq: 2, .. })
    ));
    drop(log);

    // Another wrapping key cannot open the log.
    let other = new_keys();
    let err = MessageLog::open(config(dir.path(), None), other.wrapper.clone()).unwrap_err();
    assert!(matches!(err, LogError::DataKey { .. }), "{err}");
}

#[tokio::test]
async fn tampering_with_stored_records_is_detected() {
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_requests(dir.path(), &keys, 5, Some("EE49002124277")).await;
    drop(log);
    // An operator with access to the disk rewrites who asked for record 2, and a body.
    edit_value(dir.path(), CF_RECORDS, 2, |value| {
        replace(value, b"hospital-ehr", b"hospital-xyz")
    });
    edit_value(dir.path(), CF_BODIES, 4, |value| {
        let last = value.len() - 1;
        value[last] ^= 1;
    });
    let log = MessageLog::open(config(dir.path(), None), keys.wrapper.clone()).unwrap();
    let err = verify::verify(&log.export(0, 5).unwrap(), None).unwrap_err();
    assert!(
        matches!(err, VerifyError::BrokenLink { seq: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("record 3: "), "{err}");
    let err = log.record(4).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { seq: 4, .. }), "{err}");
}

#[tokio::test]
async fn find_usage_is_newest_first_with_offset_and_limit_for_one_person() {
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    let log = MessageLog::open(config(dir.path(), None), keys.wrapper.clone()).unwrap();
    let (alice, bob) = ("EE49002124277", "EE4900212427");
    for n in 0..10 {
        // Alice's requests are 0, 2, 4, ...; each is followed by a response about her too.
        let subject = if n % 2 == 0 { alice } else { bob };
        log.append(vec![
            record(n, Kind::Request, Some(subject)),
            record(n, Kind::Response, Some(subject)),
        ])
        .await
        .unwrap();
    }
    log.append(vec![record(10, Kind::Request, None)])
        .await
        .unwrap();

    let all = log.find_usage(alice, 0, 100).unwrap();
    let ids: Vec<_> = all.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(
        ids,
        ["msg-0008", "msg-0006", "msg-0004", "msg-0002", "msg-0000"]
    );
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq));
    let entry = &all[0];
    assert_eq!(entry.client, "EE/GOV/70000001/hospital-ehr");
    assert_eq!(entry.service, "EE/GOV/70000002/pharmacy/prescriptions");
    assert_eq!(entry.user_id.as_deref(), Some("EE38001085718"));
    assert_eq!(entry.purpose_of_use.as_deref(), Some("treatment"));
    assert_eq!(entry.logged_at_ms, 1_764_000_000_008);
    assert_eq!(
        entry.record_hash,
        log.record(entry.seq).unwrap().unwrap().hash
    );
    assert!(all.iter().any(|e| e.emergency) && all.iter().any(|e| !e.emergency));
    assert!(entry.stamp.is_none());

    let page: Vec<_> = log
        .find_usage(alice, 1, 2)
        .unwrap()
        .into_iter()
        .map(|e| e.message_id)
        .collect();
    assert_eq!(page, ["msg-0006", "msg-0004"]);
    assert!(log.find_usage(alice, 5, 10).unwrap().is_empty());
    // Bob's code is a prefix of Alice's: the index keeps them apart.
    let bobs: Vec<_> = log
        .find_usage(bob, 0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.message_id)
        .collect();
    assert_eq!(
        bobs,
        ["msg-0009", "msg-0007", "msg-0005", "msg-0003", "msg-0001"]
    );
    assert!(log.find_usage("EE00000000000", 0, 10).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_synced_writes() {
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let metrics = LogMetrics::register(&registry).unwrap();
    let log = MessageLog::open_with_metrics(
        config(dir.path(), None),
        keys.wrapper.clone(),
        metrics.clone(),
    )
    .unwrap();
    let appends = 400u64;
    let started = Instant::now();
    let tasks: Vec<_> = (0..appends)
        .map(|n| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append(vec![record(n, Kind::Request, None)])
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..appends).collect::<Vec<_>>(),
        "every append got its own number, without gaps"
    );
    let writes = metrics.commit_batch_records.get_sample_count();
    assert_eq!(metrics.records_appended.get(), appends);
    assert!(
        writes < appends,
        "{writes} synced writes for {appends} concurrent appends: no group commit"
    );
    eprintln!("{appends} concurrent appends in {elapsed:?} with {writes} synced writes");
    let report = verify::verify(&log.export(0, appends).unwrap(), None).unwrap();
    assert_eq!(report.records, appends);
}

#[tokio::test]
async fn acknowledged_records_are_in_the_write_ahead_log_at_once() {
    // A copy of the directory taken right after the acknowledgement, while the log is still
    // open and nothing was flushed or closed, is what a crash (kill -9) would leave behind.
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    let log = MessageLog::open(config(dir.path(), None), keys.wrapper.clone()).unwrap();
    log.append(vec![record(0, Kind::Request, Some("EE49002124277"))])
        .await
        .unwrap();
    log.append(vec![record(1, Kind::Response, Some("EE49002124277"))])
        .await
        .unwrap();
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    let recovered = MessageLog::open(config(crashed.path(), None), keys.wrapper.clone()).unwrap();
    assert_eq!(recovered.status().records, 2);
    assert_eq!(
        recovered.record(1).unwrap().unwrap().body,
        record(1, Kind::Response, None).body
    );
    assert_eq!(
        recovered.find_usage("EE49002124277", 0, 10).unwrap().len(),
        1
    );
    drop(log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_are_stamped_and_every_record_proof_verifies() {
    let service = Timestamping::start().await;
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    let log =
        MessageLog::open(config(dir.path(), Some(service.addr)), keys.wrapper.clone()).unwrap();
    log.spawn_stamper();
    let tasks: Vec<_> = (0..30)
        .map(|n| {
            let log = log.clone();
            tokio::spawn(async move {
                let kind = if n % 3 == 2 {
                    Kind::Response
                } else {
                    Kind::Request
                };
                log.append(vec![record(n, kind, Some("EE49002124277"))])
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    eventually(Duration::from_secs(10), "every record stamped", || {
        log.status().unstamped == 0
    })
    .await;
    let status = log.status();
    assert!(status.last_stamp.is_some() && status.failing_since.is_none() && status.lag.is_none());
    for seq in 0..30 {
        let stamp = log.record(seq).unwrap().unwrap().stamp.expect("stamped");
        assert!(stamp.batch.covers(seq));
    }
    assert!(
        log.find_usage("EE49002124277", 0, 100)
            .unwrap()
            .iter()
            .all(|e| e.stamp.is_some())
    );
    let bundle = log.export(0, 30).unwrap();
    let report = verify::verify(&bundle, None).unwrap();
    assert_eq!((report.records, report.stamped), (30, 30));
    assert!(report.batches >= 1);

    // A record changed after it was stamped: its own proof fails, naming it.
    let mut tampered = bundle.clone();
    let encoded = &mut tampered.records[7].encoded;
    replace(encoded, b"hospital-ehr", b"hospital-xyz");
    let err = verify::verify(&tampered, None).unwrap_err();
    assert!(matches!(err, VerifyError::BadProof { seq: 7, .. }), "{err}");
    // A KSI signature that signs something else.
    let mut forged = bundle.clone();
    forged.batches[0].root[0] ^= 1;
    assert!(matches!(
        verify::verify(&forged, None),
        Err(VerifyError::BadProof { .. })
    ));
    let addr = service.addr;
    let other =
        tokio::task::spawn_blocking(move || client::sign(addr, &batch::imprint(&[7; 32]), 0))
            .await
            .unwrap();
    let mut forged = bundle.clone();
    forged.batches[0].ksi_signature = other.unwrap();
    let err = verify::verify(&forged, None).unwrap_err();
    assert!(
        matches!(err, VerifyError::BadTimestamp { batch: 0, .. }),
        "{err}"
    );
    let mut forged = bundle.clone();
    forged.batches[0].ksi_signature.truncate(100);
    assert!(matches!(
        verify::verify(&forged, None),
        Err(VerifyError::BadTimestamp { batch: 0, .. })
    ));

    // New records after a quiet spell are stamped too; shutdown stamps what is left.
    log.append(vec![record(30, Kind::Request, None)])
        .await
        .unwrap();
    log.shutdown().await.unwrap();
    assert_eq!(log.status().unstamped, 0);
    drop(log);

    // Proofs are rebuilt from each batch's stored record hashes, after a reopen too; a changed
    // hash is a corrupt log, not a wrong proof.
    let log = MessageLog::open(config(dir.path(), None), keys.wrapper.clone()).unwrap();
    assert_eq!(
        verify::verify(&log.export(0, 31).unwrap(), None)
            .unwrap()
            .stamped,
        31
    );
    drop(log);
    edit_value(dir.path(), CF_BATCH_HASHES, 0, |value| value[0] ^= 1);
    let log = MessageLog::open(config(dir.path(), None), keys.wrapper.clone()).unwrap();
    let err = log.record(0).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { seq: 0, .. }), "{err}");
    assert!(err.to_string().contains("do not lead to its root"), "{err}");
    assert!(matches!(log.export(0, 31), Err(LogError::Corrupt { .. })));
    service.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refuses_new_exchanges_while_timestamping_fails_too_long_then_recovers() {
    let service = Timestamping::start().await;
    let link = Link::start(service.addr).await;
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let metrics = LogMetrics::register(&registry).unwrap();
    let log = MessageLog::open_with_metrics(
        config(dir.path(), Some(link.addr)),
        keys.wrapper.clone(),
        metrics.clone(),
    )
    .unwrap();
    log.spawn_stamper();
    log.append(vec![record(0, Kind::Request, Some("EE49002124277"))])
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "first stamp", || {
        log.status().unstamped == 0
    })
    .await;

    // The timestamping service becomes unreachable.
    link.up.store(false, Ordering::SeqCst);
    let cut = SystemTime::now();
    log.append(vec![record(1, Kind::Request, Some("EE49002124277"))])
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "stamping failing", || {
        log.status().failing_since.is_some()
    })
    .await;
    log.check_accepting().unwrap();
    eventually(Duration::from_secs(5), "refusing", || {
        log.check_accepting().is_err()
    })
    .await;
    let refused_after = cut.elapsed().unwrap();
    assert!(
        refused_after >= Duration::from_millis(800),
        "refused after {refused_after:?}, before the limit"
    );
    let err = log.check_accepting().unwrap_err();
    let LogError::TimestampingFailed { since, why } = &err else {
        panic!("{err}")
    };
    assert!(*since >= cut - Duration::from_secs(1), "{since:?}");
    assert!(why.contains(&link.addr.to_string()), "{why}");
    let status = log.status();
    assert!(!status.accepting && status.unstamped == 1 && status.last_error.is_some());
    assert_eq!(metrics.refusing.get(), 1);
    assert!(metrics.stamps.with_label_values(&["error"]).get() >= 1);
    // Appends still work, for the responses of exchanges already under way.
    log.append(vec![record(2, Kind::Response, None)])
        .await
        .unwrap();

    // The service is back: the backlog is stamped and exchanges are accepted again.
    link.up.store(true, Ordering::SeqCst);
    eventually(Duration::from_secs(10), "accepting again", || {
        log.check_accepting().is_ok()
    })
    .await;
    eventually(Duration::from_secs(10), "backlog stamped", || {
        log.status().unstamped == 0
    })
    .await;
    let status = log.status();
    assert!(status.accepting && status.failing_since.is_none() && status.last_error.is_none());
    assert_eq!(metrics.refusing.get(), 0);
    assert_eq!(metrics.unstamped_records.get(), 0);
    assert_eq!(
        verify::verify(&log.export(0, 3).unwrap(), None)
            .unwrap()
            .stamped,
        3
    );
    log.shutdown().await.unwrap();
    service.running.shutdown().await;
}

#[tokio::test]
async fn proofs_stored_per_record_by_earlier_versions_are_still_read() {
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_requests(dir.path(), &keys, 3, None).await;
    let hashes: Vec<_> = (0..3)
        .map(|seq| log.record(seq).unwrap().unwrap().hash)
        .collect();
    drop(log);
    // A stamped batch as earlier versions stored it: the batch, and a proof per record (no
    // record hashes for the batch).
    let (root, proofs) = batch::build(0, &hashes);
    let stamped = Batch {
        first_seq: 0,
        count: 3,
        root,
        stamped_at_ms: 1,
        ksi_signature: vec![0x08, 0x00, 0x00],
    };
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), COLUMN_FAMILIES)
            .unwrap();
        for (seq, proof) in (0u64..).zip(&proofs) {
            db.put_cf(
                db.cf_handle(CF_PROOFS).unwrap(),
                seq.to_be_bytes(),
                proof.encode(),
            )
            .unwrap();
        }
        db.put_cf(
            db.cf_handle(CF_BATCHES).unwrap(),
            0u64.to_be_bytes(),
            stamped.encode(),
        )
        .unwrap();
    }
    let log = MessageLog::open(config(dir.path(), None), keys.wrapper.clone()).unwrap();
    for (seq, proof) in (0u64..).zip(&proofs) {
        let stamp = log
            .record(seq)
            .unwrap()
            .unwrap()
            .stamp
            .expect("the stored proof is read");
        assert_eq!((&stamp.proof, &stamp.batch), (proof, &stamped));
    }
    let bundle = log.export(0, 3).unwrap();
    assert!(
        bundle
            .records
            .iter()
            .map(|r| r.proof.as_ref())
            .eq(proofs.iter().map(Some))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_left_unstamped_by_a_stop_are_stamped_after_restart() {
    let service = Timestamping::start().await;
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    // Logged while no timestamping service was configured (or before a crash).
    let log = log_with_requests(dir.path(), &keys, 5, None).await;
    drop(log);
    let log =
        MessageLog::open(config(dir.path(), Some(service.addr)), keys.wrapper.clone()).unwrap();
    assert_eq!(log.status().unstamped, 5);
    log.check_accepting().unwrap();
    log.spawn_stamper();
    eventually(Duration::from_secs(10), "backlog stamped", || {
        log.status().unstamped == 0
    })
    .await;
    assert_eq!(
        verify::verify(&log.export(0, 5).unwrap(), None)
            .unwrap()
            .stamped,
        5
    );
    log.shutdown().await.unwrap();
    service.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_record_hashes_a_crash_lost_proves_its_records_from_them() {
    // The batch's record hashes are written without the write-ahead log; a copy taken right
    // after the stamp, while the log is open, is what a crash would leave: the batch, but no
    // hashes.
    let service = Timestamping::start().await;
    let keys = new_keys();
    let dir = tempfile::tempdir().unwrap();
    let log =
        MessageLog::open(config(dir.path(), Some(service.addr)), keys.wrapper.clone()).unwrap();
    for n in 0..6 {
        log.append(vec![record(n, Kind::Request, Some("EE49002124277"))])
            .await
            .unwrap();
    }
    assert_eq!(log.stamp_now().await.unwrap().len(), 1);
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    {
        let db = rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            crashed.path(),
            COLUMN_FAMILIES,
        )
        .unwrap();
        assert!(
            db.get_cf(db.cf_handle(CF_BATCHES).unwrap(), 0u64.to_be_bytes())
                .unwrap()
                .is_some(),
            "the batch is durable"
        );
        assert!(
            db.get_cf(db.cf_handle(CF_BATCH_HASHES).unwrap(), 0u64.to_be_bytes())
                .unwrap()
                .is_none(),
            "its hashes were not"
        );
    }
    let recovered = MessageLog::open(config(crashed.path(), None), keys.wrapper.clone()).unwrap();
    assert_eq!(recovered.status().unstamped, 0);
    let report = verify::verify(&recovered.export(0, 6).unwrap(), None).unwrap();
    assert_eq!((report.records, report.stamped), (6, 6));
    assert!(
        recovered
            .find_usage("EE49002124277", 0, 10)
            .unwrap()
            .iter()
            .all(|e| e.stamp.is_some())
    );
    drop(recovered);
    // The recomputed hashes were stored again, and the log closed with them on disk.
    let db = rocksdb::DB::open_cf(
        &rocksdb::Options::default(),
        crashed.path(),
        COLUMN_FAMILIES,
    )
    .unwrap();
    assert_eq!(
        db.get_cf(db.cf_handle(CF_BATCH_HASHES).unwrap(), 0u64.to_be_bytes())
            .unwrap()
            .map(|v| v.len()),
        Some(6 * 32)
    );
    drop(db);
    // A record missing from a batch whose hashes are gone is a corrupt log, not a wrong proof.
    {
        let db = rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            crashed.path(),
            COLUMN_FAMILIES,
        )
        .unwrap();
        db.delete_cf(db.cf_handle(CF_BATCH_HASHES).unwrap(), 0u64.to_be_bytes())
            .unwrap();
        db.delete_cf(db.cf_handle(CF_RECORDS).unwrap(), 3u64.to_be_bytes())
            .unwrap();
    }
    let damaged = MessageLog::open(config(crashed.path(), None), keys.wrapper.clone()).unwrap();
    let err = damaged.record(0).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { seq: 3, .. }), "{err}");
    log.shutdown().await.unwrap();
    service.running.shutdown().await;
}

/// A timestamping service in-process on 127.0.0.1:0, with software keys and a RocksDB calendar.
struct Timestamping {
    addr: SocketAddr,
    running: Running,
    _dir: tempfile::TempDir,
}

impl Timestamping {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = SoftwareKeyStore::open(dir.path().join("keys")).unwrap();
        keys.generate("timestamping-ca", KeyType::EcP256).unwrap();
        keys.generate("timestamping", KeyType::EcP256).unwrap();
        let ca: Arc<dyn Signer> = keys.signer("timestamping-ca", None).unwrap();
        let key: Arc<dyn Signer> = keys.signer("timestamping", None).unwrap();
        let not_before = SystemTime::now() - Duration::from_secs(3600);
        let (_, certificate) =
            issue_certificates(ca.as_ref(), key.as_ref(), not_before, 365).unwrap();
        let signer = CalendarSigner::new(key, &certificate).unwrap();
        let store: Box<dyn CalendarStore> =
            Box::new(RocksStore::open(dir.path().join("calendar")).unwrap());
        let calendar = Calendar::open(store).unwrap();
        let running = service::spawn(calendar, signer, service::Config::default()).unwrap();
        let app = http::router(
            running.handle.clone(),
            PduAuth {
                login_id: "anon".into(),
                key: b"anon".to_vec(),
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Timestamping {
            addr,
            running,
            _dir: dir,
        }
    }
}

/// A TCP relay to the timestamping service that can be cut: while down, it closes every
/// connection at once, as a service that is gone would.
struct Link {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
}

impl Link {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let is_up = Arc::clone(&up);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !is_up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Link { addr, up }
    }
}

fn read_dir_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(read_dir_bytes(&path));
        } else {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&path, &target);
        } else if path.file_name().unwrap() != "LOCK" {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Rewrites the value of `seq` in column family `cf` with RocksDB directly, as someone with
/// access to the disk could.
fn edit_value(dir: &Path, cf: &str, seq: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, COLUMN_FAMILIES).unwrap();
    let handle = db.cf_handle(cf).unwrap();
    let mut value = db.get_cf(handle, seq.to_be_bytes()).unwrap().unwrap();
    edit(&mut value);
    db.put_cf(handle, seq.to_be_bytes(), value).unwrap();
}

fn replace(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("bytes to replace");
    bytes[at..at + from.len()].copy_from_slice(to);
}
