//! `backbone demo` end to end, as a person would run it: a short scenario with software keys on
//! free ports; while it runs, the scenario person signs in at its citizen portal through the test
//! OpenID provider and sees the accesses, emergency included, and another test person sees none
//! of them; after Ctrl-C, every exchange it made is checked in both gateways' message logs (logged
//! on each side, timestamped, the emergency flagged), nobody else's history holds it, and the
//! commands its summary prints succeed.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Read as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backbone_gateway::log::{LogConfig, MessageLog, Side};
use backbone_hsm::KeyStore;
use backbone_hsm::software::SoftwareKeyStore;

const AGENCIES: [&str; 5] = [
    "hospital",
    "family-doctor",
    "pharmacy",
    "health-insurance-fund",
    "portal",
];

fn backbone(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_backbone"))
        .current_dir(dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    (
        status.code().unwrap(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// The flags of the short demo the tests run.
fn demo_args<'a>(data: &'a Path, scenarios: &'a str) -> Vec<&'a str> {
    vec![
        "demo",
        "--data-dir",
        data.to_str().unwrap(),
        "--keys",
        "software",
        "--base-port",
        "0",
        "--citizens",
        "200",
        "--scenarios",
        scenarios,
        "--publication-interval",
        "1",
        "--batch-interval-ms",
        "200",
    ]
}

/// The short demo, stopping after the traffic.
fn demo(dir: &Path, data: &Path, scenarios: &str) -> (i32, String, String) {
    let mut args = demo_args(data, scenarios);
    args.push("--exit-after-traffic");
    backbone(dir, &args)
}

/// A demo left running after its summary; killed if the test fails before stopping it.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    out: String,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn start(dir: &Path, args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_backbone"))
            .current_dir(dir)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (send, lines) = mpsc::channel();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            stdout
                .lines()
                .map_while(Result::ok)
                .try_for_each(|line| send.send(line))
        });
        let mut stderr = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Running {
            child,
            lines,
            out: String::new(),
            err: Some(err),
        }
    }

    /// Reads standard output until a line starts with `prefix`.
    fn wait_for(&mut self, prefix: &str, patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.starts_with(prefix);
                    self.out.push_str(&line);
                    self.out.push('\n');
                    if found {
                        return;
                    }
                }
                Err(e) => {
                    let err = self.stderr();
                    panic!(
                        "no line '{prefix}' ({e:?}); stdout:\n{}\nstderr:\n{err}",
                        self.out
                    )
                }
            }
        }
    }

    /// Ctrl-C, then the exit code, all of standard output and standard error.
    fn interrupt(mut self) -> (i32, String, String) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not stop after Ctrl-C; stdout:\n{}",
                self.out
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.out.push_str(&line);
            self.out.push('\n');
        }
        (code, std::mem::take(&mut self.out), self.stderr())
    }

    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        self.err
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP client that keeps cookies by hand (the portal's are `Secure`, sent here over
/// plain HTTP to localhost as a browser would) and follows no redirect.
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    /// (status, `Location`, body)
    async fn send(&mut self, request: reqwest::RequestBuilder) -> (u16, String, String) {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let request = if cookie.is_empty() {
            request
        } else {
            request.header("cookie", cookie.join("; "))
        };
        let response = request.send().await.unwrap();
        for set in response.headers().get_all("set-cookie") {
            let (pair, _) = set.to_str().unwrap().split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.insert(name.to_owned(), value.to_owned());
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, location, response.text().await.unwrap())
    }

    async fn get(&mut self, url: &str) -> (u16, String, String) {
        let request = self.http.get(url);
        self.send(request).await
    }

    /// Signs in at `portal` as `subject` through the test provider's picker; the history page.
    async fn sign_in(&mut self, portal: &str, subject: &str) -> String {
        let (status, authorize, body) = self.get(&format!("{portal}/login")).await;
        assert_eq!(status, 303, "{body}");
        let (status, _, picker) = self.get(&authorize).await;
        assert_eq!(status, 200, "{picker}");
        let code = subject.strip_prefix("EE").unwrap();
        assert!(
            picker.contains(&format!("value=\"{code}\"")),
            "{subject} not offered: {picker}"
        );
        let marker = "name=\"request\" value=\"";
        let request = picker
            .split(marker)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let provider = authorize.split("/authorize").next().unwrap();
        let form = self
            .http
            .post(format!("{provider}/authorize"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("request={request}&person={code}"));
        let (status, callback, body) = self.send(form).await;
        assert_eq!(status, 303, "{body}");
        let (status, to, body) = self.get(&callback).await;
        assert_eq!((status, to.as_str()), (303, "/history"), "{body}");
        let (status, _, history) = self.get(&format!("{portal}/history")).await;
        assert_eq!(status, 200, "{history}");
        history
    }
}

/// The word after `prefix` on the summary line starting with it (trimmed).
fn summary_word<'a>(out: &'a str, prefix: &str) -> &'a str {
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' in {out}"));
    line[prefix.len()..].split_whitespace().next().unwrap()
}

/// The subject in parentheses on the summary line starting with `prefix`.
fn summary_subject<'a>(out: &'a str, prefix: &str) -> &'a str {
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' in {out}"));
    let start = line.find("(EE").unwrap() + 1;
    line[start..].split(')').next().unwrap()
}

fn open_log(data: &Path, agency: &str) -> MessageLog {
    let keys = SoftwareKeyStore::open(data.join("keys").join(agency)).unwrap();
    let wrapper = keys.wrapper("gateway-log-key").unwrap();
    MessageLog::open(LogConfig::new(data.join(agency).join("log"), None), wrapper).unwrap()
}

#[test]
fn demo_exchanges_are_logged_on_both_sides_stamped_shown_in_the_portal_and_verifiable_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let mut running = Running::start(dir.path(), &demo_args(&data, "3"));
    running.wait_for("press Ctrl-C", Duration::from_secs(60));
    let summary = running.out.clone();
    // The portal's gateway gathers one person's accesses from every agency, and nobody else's.
    assert!(
        summary.contains(": 5 accesses, 1 in an emergency (")
            && summary.contains("log records at 4 agencies)"),
        "{summary}"
    );
    assert!(
        summary.contains("another test person, Jaan Tamm (EE38001085718): 0 accesses"),
        "{summary}"
    );

    // The portal, while the demo runs: the scenario person sees the institutions that accessed
    // their data and the emergency; another test person sees none of it.
    let portal = summary_word(&summary, "portal:");
    assert!(portal.starts_with("http://localhost:"), "{summary}");
    let person = summary_subject(&summary, "sign in through the test OpenID provider as");
    let other = summary_subject(&summary, "another test person,");
    let institutions = [
        "Demo Central Hospital",
        "Demo Family Practice",
        "Demo Pharmacy",
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mine, theirs) = runtime.block_on(async {
        (
            Browser::new().sign_in(portal, person).await,
            Browser::new().sign_in(portal, other).await,
        )
    });
    for institution in institutions {
        assert!(mine.contains(institution), "{institution} missing: {mine}");
        assert!(
            !theirs.contains(institution),
            "{institution} shown to another person: {theirs}"
        );
    }
    assert!(
        mine.contains("class=\"badge emergency\"") && !theirs.contains("badge emergency"),
        "{mine}"
    );
    assert!(
        !mine.contains("notice warn"),
        "an agency did not answer: {mine}"
    );
    // Each exchange once, though both its agencies logged it.
    assert!(
        mine.contains("<strong>5</strong>") && theirs.contains("<strong>0</strong>"),
        "{mine}\n{theirs}"
    );

    let (code, out, err) = running.interrupt();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("keys: software keys in"), "{out}");
    assert!(out.contains("13 exchanges made, 0 failed"), "{out}");
    assert!(
        out.contains("latest publication (") && out.contains("registry http://127.0.0.1:"),
        "{out}"
    );
    assert!(err.contains("traffic: 13/13 exchanges, 0 failed"), "{err}");
    assert!(
        out.contains("stopping: portal, gateways") && out.ends_with("stopped\n"),
        "{out}"
    );

    // Every command the summary prints succeeds, run as printed.
    let commands: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(" ksi verify ") || l.contains(" audit verify "))
        .collect();
    assert_eq!(commands.len(), 2, "{out}");
    for command in commands {
        // Run exactly as printed: the program named (the binary's path, as it is not on PATH
        // here) with its arguments.
        let mut words = command.split_whitespace();
        let program = words.next().unwrap();
        let Output {
            status,
            stdout,
            stderr,
        } = Command::new(program)
            .args(words)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let (code, stdout, stderr) = (
            status.code().unwrap(),
            String::from_utf8(stdout).unwrap(),
            String::from_utf8(stderr).unwrap(),
        );
        assert_eq!(code, 0, "{command}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("OK"), "{command}: {stdout}");
    }

    // After the process stopped: each exchange in both gateways' logs, stamped.
    let exchanges: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(data.join("exchanges.json")).unwrap()).unwrap();
    assert_eq!(exchanges.len(), 13);
    let logs: Vec<(&str, MessageLog)> = AGENCIES.iter().map(|a| (*a, open_log(&data, a))).collect();
    let log = |agency: &str| &logs.iter().find(|(a, _)| *a == agency).unwrap().1;
    let steps: BTreeSet<&str> = exchanges
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        BTreeSet::from([
            "referral",
            "e-prescription",
            "dispensing",
            "reimbursement",
            "emergency access"
        ])
    );
    let mut subjects = BTreeSet::new();
    for exchange in &exchanges {
        let id = exchange["message_id"].as_str().unwrap();
        let subject = exchange["data_subject"].as_str().unwrap();
        subjects.insert(subject.to_owned());
        assert!(
            exchange["status"].as_u64().unwrap() / 100 == 2,
            "{exchange}"
        );
        for (agency, side) in [
            (exchange["client_agency"].as_str().unwrap(), Side::Client),
            (
                exchange["provider_agency"].as_str().unwrap(),
                Side::Provider,
            ),
        ] {
            let entries = log(agency).find_usage(subject, 0, 1000).unwrap();
            let entry = entries
                .iter()
                .find(|e| e.message_id == id && e.side == side)
                .unwrap_or_else(|| panic!("{id} not in the {agency} log: {exchange}"));
            assert!(entry.stamp.is_some(), "{id} not stamped at {agency}");
            assert_eq!(
                entry.purpose_of_use.as_deref(),
                exchange["purpose_of_use"].as_str()
            );
            assert_eq!(
                entry.emergency,
                exchange["step"] == "emergency access",
                "{exchange}"
            );
            if entry.emergency {
                assert!(
                    entry
                        .user_id
                        .as_deref()
                        .is_some_and(|u| u.starts_with("EE")),
                    "{entry:?}"
                );
            }
        }
    }
    // Someone the traffic did not touch has no history anywhere but the portal's own look-ups
    // (findUsage on their behalf, when they signed in).
    let untouched = "EE38001085718";
    assert!(!subjects.contains(untouched));
    for (agency, log) in &logs {
        let entries = log.find_usage(untouched, 0, 100).unwrap();
        let others: Vec<_> = entries
            .iter()
            .filter(|e| {
                !(e.service.ends_with("/findUsage") && e.client == "EE/GOV/70000005/portal")
            })
            .collect();
        assert!(others.is_empty(), "{agency}: {others:?}");
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
    assert!(
        again.contains("(reused)") && again.contains("5 exchanges made, 0 failed"),
        "{again}"
    );
    // The hospital's log kept the first run's records and added the second's.
    let records = |text: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("hospital ") && l.contains("message log"))
            .unwrap();
        line.split("message log: ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(records(&again) > records(&out), "{out}\n{again}");
    // The key store chosen first stays.
    let (code, _, err) = backbone(
        dir.path(),
        &[
            "demo",
            "--data-dir",
            data.to_str().unwrap(),
            "--keys",
            "softhsm",
            "--exit-after-traffic",
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("was set up with software keys"), "{err}");
}
