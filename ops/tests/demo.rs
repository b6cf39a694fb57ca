//! `backbone demo` end to end, as a person would run it: a short scenario with software keys on
//! free ports, then, after the process has stopped, every exchange it made is checked in both
//! gateways' message logs (logged on each side, timestamped, the emergency flagged), nobody else's
//! history holds it, and the commands its summary prints succeed.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use backbone_gateway::log::{LogConfig, MessageLog, Side};
use backbone_hsm::KeyStore;
use backbone_hsm::software::SoftwareKeyStore;

const AGENCIES: [&str; 5] = ["hospital", "family-doctor", "pharmacy", "health-insurance-fund", "portal"];

fn backbone(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } = Command::new(env!("CARGO_BIN_EXE_backbone"))
        .current_dir(dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    (status.code().unwrap(), String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

/// The short demo the tests run.
fn demo(dir: &Path, data: &Path, scenarios: &str) -> (i32, String, String) {
    backbone(
        dir,
        &[
            "demo", "--data-dir", data.to_str().unwrap(), "--keys", "software", "--base-port", "0", "--citizens", "200", "--scenarios", scenarios,
            "--publication-interval", "1", "--batch-interval-ms", "200", "--exit-after-traffic",
        ],
    )
}

fn open_log(data: &Path, agency: &str) -> MessageLog {
    let keys = SoftwareKeyStore::open(data.join("keys").join(agency)).unwrap();
    let wrapper = keys.wrapper("gateway-log-key").unwrap();
    MessageLog::open(LogConfig::new(data.join(agency).join("log"), None), wrapper).unwrap()
}

#[test]
fn demo_exchanges_are_logged_on_both_sides_stamped_and_verifiable_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let (code, out, err) = demo(dir.path(), &data, "3");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("keys: software keys in"), "{out}");
    assert!(out.contains("13 exchanges made, 0 failed"), "{out}");
    assert!(out.contains("latest publication (") && out.contains("registry http://127.0.0.1:"), "{out}");
    assert!(err.contains("traffic: 13/13 exchanges, 0 failed"), "{err}");
    // The portal's gateway gathers one person's accesses from every agency, and nobody else's.
    assert!(out.contains("accesses at 4 agencies; another person: 0"), "{out}");
    assert!(out.contains("press Ctrl-C") == false && out.ends_with("stopped\n"), "{out}");

    // Every command the summary prints succeeds, run as printed.
    let commands: Vec<&str> = out.lines().map(str::trim).filter(|l| l.starts_with("backbone ")).collect();
    assert_eq!(commands.len(), 2, "{out}");
    for command in commands {
        let words: Vec<&str> = command.split_whitespace().skip(1).collect();
        let (code, stdout, stderr) = backbone(dir.path(), &words);
        assert_eq!(code, 0, "{command}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("OK"), "{command}: {stdout}");
    }

    // After the process stopped: each exchange in both gateways' logs, stamped.
    let exchanges: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(data.join("exchanges.json")).unwrap()).unwrap();
    assert_eq!(exchanges.len(), 13);
    let logs: Vec<(&str, MessageLog)> = AGENCIES.iter().map(|a| (*a, open_log(&data, a))).collect();
    let log = |agency: &str| &logs.iter().find(|(a, _)| *a == agency).unwrap().1;
    let steps: BTreeSet<&str> = exchanges.iter().map(|e| e["step"].as_str().unwrap()).collect();
    assert_eq!(steps, BTreeSet::from(["referral", "e-prescription", "dispensing", "reimbursement", "emergency access"]));
    let mut subjects = BTreeSet::new();
    for exchange in &exchanges {
        let id = exchange["message_id"].as_str().unwrap();
        let subject = exchange["data_subject"].as_str().unwrap();
        subjects.insert(subject.to_owned());
        assert!(exchange["status"].as_u64().unwrap() / 100 == 2, "{exchange}");
        for (agency, side) in [(exchange["client_agency"].as_str().unwrap(), Side::Client), (exchange["provider_agency"].as_str().unwrap(), Side::Provider)] {
            let entries = log(agency).find_usage(subject, 0, 1000).unwrap();
            let entry = entries.iter().find(|e| e.message_id == id && e.side == side).unwrap_or_else(|| panic!("{id} not in the {agency} log: {exchange}"));
            assert!(entry.stamp.is_some(), "{id} not stamped at {agency}");
            assert_eq!(entry.purpose_of_use.as_deref(), exchange["purpose_of_use"].as_str());
            assert_eq!(entry.emergency, exchange["step"] == "emergency access", "{exchange}");
            if entry.emergency {
                assert!(entry.user_id.as_deref().is_some_and(|u| u.starts_with("EE")), "{entry:?}");
            }
        }
    }
    // Someone the traffic did not touch has no history anywhere.
    let untouched = "EE38001085718";
    assert!(!subjects.contains(untouched));
    for (agency, log) in &logs {
        assert!(log.find_usage(untouched, 0, 10).unwrap().is_empty(), "{agency}");
        let status = log.status();
        assert_eq!(status.unstamped, 0, "{agency}: {status:?}");
        // The whole log verifies offline: links, proofs, KSI signatures.
        if let Some(last) = status.last_seq {
            let bundle = log.export(0, last + 1).unwrap();
            backbone_gateway::log::verify::verify(&bundle, None).unwrap();
        }
    }
}

#[test]
fn a_second_run_reuses_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let (code, out, err) = demo(dir.path(), &data, "1");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("(initialised now)"), "{out}");
    let (code, again, err) = demo(dir.path(), &data, "1");
    assert_eq!(code, 0, "stdout:\n{again}\nstderr:\n{err}");
    assert!(again.contains("(reused)") && again.contains("5 exchanges made, 0 failed"), "{again}");
    // The hospital's log kept the first run's records and added the second's.
    let records = |text: &str| -> u64 {
        let line = text.lines().find(|l| l.trim_start().starts_with("hospital ") && l.contains("message log")).unwrap();
        line.split("message log: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()
    };
    assert!(records(&again) > records(&out), "{out}\n{again}");
    // The key store chosen first stays.
    let (code, _, err) = backbone(dir.path(), &["demo", "--data-dir", data.to_str().unwrap(), "--keys", "softhsm", "--exit-after-traffic"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("was set up with software keys"), "{err}");
}
