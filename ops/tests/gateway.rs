//! Two `backbone gateway serve` processes, a registry and a timestamping service as real
//! processes, a real HTTP service: exchanges under load from several clients while each gateway
//! in turn is killed with SIGKILL and restarted. Every exchange a client saw acknowledged is in
//! both gateways' message logs afterwards.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backbone_gateway::log::Kind;
use common::backbone::{
    self, Agency, DISPENSING, PATIENTS, echo_service, exchange, open_log, wait_for_exchange,
};

/// Message ids of the request records that have their outcome record. A request record
/// without one is an exchange cut off by a SIGKILL: logged before it was acted on, its outcome
/// never logged; never the other way round.
fn logged_exchanges(agency: &Agency) -> BTreeSet<String> {
    let log = open_log(agency);
    let status = log.status();
    let (mut requests, mut responses) = (BTreeSet::new(), BTreeSet::new());
    for seq in 0..status.records {
        let record = log
            .record(seq)
            .unwrap()
            .unwrap_or_else(|| panic!("record {seq} of {} is missing", status.records));
        match record.record.kind {
            Kind::Request => requests.insert(record.record.message_id.clone()),
            Kind::Response => responses.insert(record.record.message_id.clone()),
        };
    }
    assert!(
        responses.is_subset(&requests),
        "every logged outcome has its request"
    );
    responses
}

#[test]
fn no_acknowledged_exchange_is_lost_when_either_gateway_is_killed_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let network = backbone::start(dir);
    let (hospital, pharmacy, ts_addr) =
        (&network.hospital, &network.pharmacy, &network.timestamping);
    let service = echo_service();
    let hospital_services = [format!("{PATIENTS}=http://{service}/fhir")];
    // An administrator of the hospital's gateway grants the pharmacy access over the admin API.
    let admin_cert = dir.join("mari.pem");
    hospital.run(
        dir,
        &[
            "admin-cert",
            "--name",
            "mari",
            "--key",
            "admin-mari",
            "--out",
            admin_cert.to_str().unwrap(),
        ],
    );
    hospital.run(dir, &["add-admin", "mari", admin_cert.to_str().unwrap()]);
    let (mut hospital_gw, admin_addr) = hospital.serve(dir, ts_addr, &hospital_services, 300);
    let gateway_cert = hospital.data.join("admin-api-cert.pem");
    let remote = [
        "--admin",
        &admin_addr,
        "--admin-key",
        "admin-mari",
        "--admin-cert",
        admin_cert.to_str().unwrap(),
        "--gateway-cert",
        gateway_cert.to_str().unwrap(),
    ];
    let out = hospital.run(
        dir,
        &[
            &remote[..],
            &[
                "grant",
                PATIENTS,
                "--client",
                DISPENSING,
                "--method",
                "GET",
                "--path",
                "/Patient/*",
            ],
        ]
        .concat(),
    );
    assert_eq!(out.trim(), "granted");
    let out = hospital.run(dir, &[&remote[..], &["rights"]].concat());
    assert!(
        out.contains(PATIENTS) && out.contains("/Patient/*"),
        "{out}"
    );
    let (mut pharmacy_gw, _) = pharmacy.serve(dir, ts_addr, &[], 300);
    // The first exchange may race the pharmacy's first configuration download.
    let system = pharmacy.system(dir, DISPENSING);
    wait_for_exchange(&system);

    // Load: six clients, each exchange with its own message id; remember what was acknowledged.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (acknowledged, stop, counter) = (
                Arc::clone(&acknowledged),
                Arc::clone(&stop),
                Arc::clone(&counter),
            );
            let system = system.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("load-{}", counter.fetch_add(1, Ordering::Relaxed));
                    if exchange(&system, &id) == Some(200) {
                        acknowledged.lock().unwrap().insert(id);
                    }
                }
            })
        })
        .collect();
    let wait_for_more = |n: usize| {
        let start = acknowledged.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(30);
        while acknowledged.lock().unwrap().len() < start + n {
            assert!(
                Instant::now() < deadline,
                "no progress: {} acknowledged",
                acknowledged.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Kill the provider's gateway mid-load, restart it; then the client's.
    wait_for_more(100);
    hospital_gw.0.kill().unwrap();
    hospital_gw.0.wait().unwrap();
    hospital_gw = hospital.serve(dir, ts_addr, &hospital_services, 300).0;
    wait_for_more(100);
    pharmacy_gw.0.kill().unwrap();
    pharmacy_gw.0.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    hospital_gw.0.kill().unwrap();
    hospital_gw.0.wait().unwrap();
    drop(pharmacy_gw);

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 200, "{}", acknowledged.len());
    eprintln!(
        "{} exchanges acknowledged across two SIGKILLs",
        acknowledged.len()
    );
    for agency in [pharmacy, hospital] {
        let logged = logged_exchanges(agency);
        let missing: Vec<_> = acknowledged.difference(&logged).collect();
        assert!(
            missing.is_empty(),
            "{} lost {} acknowledged exchanges, e.g. {:?}",
            agency.id,
            missing.len(),
            missing.first()
        );
        // The hash chain and every stamped batch verify after the crashes.
        let log = open_log(agency);
        let status = log.status();
        let bundle = log.export(0, status.records).unwrap();
        let report = backbone_gateway::log::verify::verify(&bundle, None)
            .unwrap_or_else(|e| panic!("{}: {e}", agency.id));
        assert_eq!(report.records, status.records);
    }
}
