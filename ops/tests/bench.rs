//! `backbone bench exchange` as a real process, briefly: it must start the backbone, load each
//! phase (the information system on HTTPS with its registered certificate, and once on the plain
//! listener), find every exchange in both message logs, and report a positive rate for each.
//! The benchmark itself is run by hand (BENCHMARKS.md), not here.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::command;

#[test]
fn bench_exchange_reports_a_rate_for_every_phase() {
    let dir = tempfile::tempdir().unwrap();
    let mut bench = command(dir.path());
    let timeline = dir.path().join("timeline.csv");
    bench
        .args([
            "bench",
            "exchange",
            "--seconds",
            "1",
            "--connections",
            "2",
            "--json",
            "--compare-plain-client",
            "--timeline",
        ])
        .arg(&timeline);
    // SoftHSM2 tokens go where the test environment points (see .cargo/config.toml); without a
    // token directory, software keys.
    match std::env::var_os("SOFTHSM2_CONF").filter(|c| std::path::Path::new(c).exists()) {
        Some(conf) => bench.env("SOFTHSM2_CONF", conf),
        None => bench.args(["--hsm", "software"]),
    };
    let output = bench.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let phases = report["phases"].as_array().unwrap();
    // Five phases, and phase (c) again with the information system on the plain listener.
    assert_eq!(phases.len(), 6);
    assert!(
        phases[3]["phase"]
            .as_str()
            .unwrap()
            .contains("plain client port")
    );
    for phase in phases {
        assert!(
            phase["exchanges_per_second"].as_f64().unwrap() > 0.0,
            "{phase}"
        );
        assert_eq!(phase["errors"].as_u64(), Some(0), "{phase}");
    }
    // The timeline holds each exchange of the last phase, (c) at half rate, in the order they
    // began.
    let csv = std::fs::read_to_string(&timeline).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("began_us,latency_us"));
    let rows: Vec<(u64, u64)> = lines
        .map(|line| {
            let (began, latency) = line.split_once(',').unwrap();
            (began.parse().unwrap(), latency.parse().unwrap())
        })
        .collect();
    assert_eq!(
        phases[5]["phase"].as_str(),
        Some("(c) gateways, half of (c)")
    );
    assert_eq!(rows.len() as u64, phases[5]["ok"].as_u64().unwrap());
    assert!(
        rows.windows(2).all(|w| w[0].0 <= w[1].0),
        "in the order they began"
    );
    assert!(
        rows.iter()
            .all(|&(began, latency)| began < 10_000_000 && latency > 0),
        "{rows:?}"
    );
    assert!(
        report["stalls_at_half"]["count"].as_u64().is_some(),
        "{}",
        report["stalls_at_half"]
    );
    // Every phase's CPU per exchange is measured; at half rate, so is each kind of thread's share,
    // the gateways' own threads among them.
    for field in [
        "chain_cpu_us",
        "gateways_cpu_us",
        "direct_at_half_cpu_us",
        "gateways_at_half_cpu_us",
    ] {
        assert!(
            report[field].as_f64().is_some_and(|us| us > 0.0),
            "{field}: {}",
            report[field]
        );
    }
    // The client gateway times each round trip to the provider gateway, one per exchange, and
    // the provider's part of it is inside.
    let timing = |agency: &str, metric: &str| {
        report["gateway_timings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["agency"] == agency && t["metric"].as_str().unwrap().starts_with(metric))
            .cloned()
    };
    let round_trip = timing("pharmacy", "backbone_gateway_peer_round_trip_seconds")
        .expect("the client gateway's peer round trips");
    assert_eq!(
        round_trip["count"].as_u64(),
        phases[2]["ok"].as_u64(),
        "{round_trip}"
    );
    let provider = timing("hospital", "backbone_gateway_exchange_seconds").unwrap();
    assert!(
        round_trip["mean"].as_f64().unwrap() > provider["mean"].as_f64().unwrap(),
        "{round_trip} {provider}"
    );
    assert!(
        timing("hospital", "backbone_gateway_peer_round_trip_seconds").is_none(),
        "the provider sends no requests"
    );
    let threads: Vec<&str> = report["gateway_threads_at_half"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        threads.contains(&"message-log-com") && threads.contains(&"batch-sign"),
        "{threads:?}"
    );
    for log in report["logs"].as_array().unwrap() {
        assert_eq!(
            log["records"].as_u64().unwrap(),
            2 * log["exchanges"].as_u64().unwrap(),
            "{log}"
        );
        assert_eq!(log["unstamped"].as_u64(), Some(0), "{log}");
        assert!(log["batches"].as_u64().unwrap() > 0, "{log}");
    }
}
