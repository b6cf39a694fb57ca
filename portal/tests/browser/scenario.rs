//! The portal in a real browser: headless Debian chromium driven through chromedriver. A citizen
//! signs in through the test provider, filters the history, opens an entry, downloads its proof
//! (checked with the real `backbone ksi verify`), reports the access, switches to English and
//! signs out. Every page passes axe-core at WCAG 2.1 A and AA with no violation; axe is injected
//! by the test from `portal/tests/browser/node_modules` (installed by `ops/test.sh`), never
//! served by the portal. Screenshots of the main pages are saved under
//! `$CARGO_TARGET_DIR/portal-screenshots/`.
//!
//! Compiled into the `portal` test binary (see `tests/portal.rs`) so that the suite links one
//! binary fewer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{self, Backbone, PERSON, PHARMACIST};
use crate::webdriver::{Driver, Session};

fn axe_source() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; ops/test.sh installs it (npm install in portal/tests/browser)",
            path.display()
        )
    })
}

/// `$CARGO_TARGET_DIR/portal-screenshots`.
fn screenshots() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.ancestors().nth(3).unwrap().join("portal-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn check_page(session: &Session, axe: &str, name: &str) {
    let violations = session.axe(axe).await;
    assert!(
        violations.is_empty(),
        "{name}: accessibility violations: {}",
        serde_json::to_string_pretty(&violations).unwrap()
    );
    session
        .screenshot(&screenshots().join(format!("{name}.png")))
        .await;
}

async fn wait_for_url(session: &Session, part: &str) -> String {
    for _ in 0..50 {
        let url = session.url().await;
        if url.contains(part) {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never reached {part}: at {}", session.url().await);
}

async fn downloaded(dir: &Path, extension: &str) -> PathBuf {
    for _ in 0..100 {
        let found = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == extension));
        if let Some(path) = found {
            return path;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no .{extension} downloaded into {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_citizen_signs_in_filters_opens_verifies_reports_and_signs_out_in_a_browser() {
    let axe = axe_source();
    let backbone = Backbone::start().await;
    backbone.access(PERSON, "TREAT", Some(PHARMACIST)).await;
    backbone.access(PERSON, "ETREAT", Some(PHARMACIST)).await;
    backbone.access(PERSON, "HPAYMT", None).await;
    backbone.access(PERSON, "TREAT", None).await;
    backbone.stamp().await;
    let data = tempfile::tempdir().unwrap();
    let portal = backbone
        .portal(data.path().join("portal"), Duration::from_secs(600))
        .await;
    let downloads = data.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();

    let driver = Driver::start().await;
    let session = Arc::new(driver.session(&downloads).await);
    let scenario = {
        let session = Arc::clone(&session);
        let (url, provider_url) = (portal.url.clone(), portal.provider_url.clone());
        let downloads = downloads.clone();
        let work = data.path().to_path_buf();
        tokio::spawn(async move {
            let s = session.as_ref();
            // Welcome, in Estonian (the browser's language).
            s.goto(&format!("{url}/")).await;
            assert_eq!(s.attribute("html", "lang").await, "et");
            check_page(s, &axe, "01-welcome").await;

            // Sign in through the test provider.
            s.click("#sign-in").await;
            wait_for_url(s, &provider_url).await;
            check_page(s, &axe, "02-sign-in").await;
            s.click("#continue").await;
            wait_for_url(s, "/history").await;
            assert!(s.text(".who").await.contains("Jaan Tamm"));
            assert_eq!(s.count(".entry").await, 4);
            check_page(s, &axe, "03-history").await;

            // Filter: emergency access only, a shareable GET link.
            s.click("#emergency").await;
            s.click("#search").await;
            let filtered = wait_for_url(s, "emergency=1").await;
            assert_eq!(s.count(".entry").await, 1, "{filtered}");
            assert!(s.text(".entry .badge").await.contains("Erakorraline"));
            check_page(s, &axe, "04-history-emergency").await;

            // Open the entry: verified, and its proof downloads.
            s.click(".entry h2 a").await;
            wait_for_url(s, "/entries/").await;
            assert!(s.text("#integrity-status").await.contains("Kontrollitud"));
            check_page(s, &axe, "05-entry").await;
            let imprint = s
                .text("pre")
                .await
                .split("--hash ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned();
            s.click("#proof-0").await;
            let proof = downloaded(&downloads, "ksig").await;
            let certificate = reqwest::get(format!("{url}/calendar-certificate.der"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            std::fs::write(work.join("calendar.der"), &certificate).unwrap();
            let output = std::process::Command::new(common::backbone_binary())
                .args(["ksi", "verify"])
                .arg(&proof)
                .args(["--hash", &imprint, "--cert"])
                .arg(work.join("calendar.der"))
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "backbone ksi verify: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );

            // Report it.
            s.click("#report").await;
            wait_for_url(s, "/report").await;
            check_page(s, &axe, "06-report").await;
            s.type_into("#reason", "Ma ei ole sel päeval apteegis käinud.")
                .await;
            s.click("#send-report").await;
            wait_for_url(s, "/reports?sent=").await;
            assert!(s.text("#report-id").await.starts_with("R-"));
            check_page(s, &axe, "07-reports").await;

            // In English.
            s.click("a.lang").await;
            wait_for_url(s, "/reports").await;
            assert_eq!(s.attribute("html", "lang").await, "en");
            s.goto(&format!("{url}/history")).await;
            assert!(s.source().await.contains("Who has used my health data"));
            check_page(s, &axe, "08-history-en").await;

            // Sign out.
            s.click("form[action='/logout'] button").await;
            wait_for_url(s, "signed_out=1").await;
            assert!(s.source().await.contains("You have signed out."));
            check_page(s, &axe, "09-signed-out").await;
            s.goto(&format!("{url}/history")).await;
            assert!(
                !s.url().await.contains("/history"),
                "signed out: the history is gone"
            );
        })
    };
    let outcome = scenario.await;
    session.quit().await;
    drop(driver);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
