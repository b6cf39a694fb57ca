//! The portal over HTTP, against a backbone in one process: sign-in through the test OpenID
//! provider (PKCE, state, nonce), sessions and their expiry, CSRF, the security headers; the
//! access history gathered with findUsage over the backbone, merged, filtered and paged, with an
//! agency that does not answer; an entry's proof checked and verified again by the real
//! `backbone ksi verify`; reports that survive a restart; exports; every route tried for
//! another person's record; and the test provider's token endpoint as a relying party meets it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;
// The browser test (chromium, axe-core, screenshots) lives in its own file.
#[path = "browser/scenario.rs"]
mod browser;

use std::time::Duration;

use common::{Backbone, Browser, OTHER_PERSON, PERSON, PHARMACIST};

fn entry_keys(body: &str) -> Vec<String> {
    body.match_indices("href=\"/entries/")
        .map(|(i, m)| body[i + m.len()..].split('"').next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_in_sessions_csrf_and_security_headers() {
    let backbone = Backbone::start().await;
    let data = tempfile::tempdir().unwrap();
    let portal = backbone
        .portal(data.path().to_path_buf(), Duration::from_secs(2))
        .await;
    let mut browser = Browser::new();

    // The welcome page: Estonian by default, English on request, a strict CSP, no script.
    let welcome = browser.get(&format!("{}/", portal.url)).await;
    assert_eq!(welcome.status, 200);
    assert!(welcome.body.contains("<html lang=\"et\">") && welcome.body.contains("Logi sisse"));
    let csp = welcome.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(!welcome.body.contains("<script") && !welcome.body.contains("style="));
    assert_eq!(welcome.headers["x-content-type-options"], "nosniff");

    // Signing in: the authorization request carries PKCE S256, state and nonce.
    let login = browser.get(&format!("{}/login", portal.url)).await;
    let session_cookie = login.headers["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(session_cookie.contains(flag), "{session_cookie}");
    }
    let authorize = login.location();
    for parameter in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "scope=openid",
        "response_type=code",
    ] {
        assert!(authorize.contains(parameter), "{authorize}");
    }
    let pre_login_session = browser.cookies["portal_session"].clone();
    // A callback with a forged state is refused, and spends the pending sign-in.
    let picker = browser.get(&authorize).await;
    let request = picker.hidden("request");
    let back = browser
        .post(
            &format!("{}/authorize", portal.provider_url),
            &[("request", &request), ("person", "38001085718")],
        )
        .await;
    let forged = back.location().replace("state=", "state=x");
    let refused = browser.get(&forged).await;
    assert_eq!(
        (refused.status, refused.location().as_str()),
        (303, "/?failed=1")
    );
    let replayed = browser.get(&back.location()).await;
    assert_eq!(
        replayed.location(),
        "/?failed=1",
        "the pending sign-in was used up"
    );
    // The history needs a signed-in person.
    let anonymous = browser.get(&format!("{}/history", portal.url)).await;
    assert_eq!(
        (anonymous.status, anonymous.location().as_str()),
        (303, "/")
    );

    // A real sign-in: a new session id, the person's name on the page.
    let history = browser.sign_in(&portal, "38001085718").await;
    assert_eq!(history.status, 200, "{}", history.body);
    assert!(history.body.contains("Jaan Tamm"));
    assert_ne!(
        browser.cookies["portal_session"], pre_login_session,
        "the session id changes at sign-in"
    );
    assert_eq!(history.headers["cache-control"], "no-store");

    // Switching language keeps the page and only accepts paths on this site.
    let switched = browser
        .get(&format!(
            "{}/lang?to=en&back=%2Fhistory%3Fpurpose%3DTREAT",
            portal.url
        ))
        .await;
    assert_eq!(switched.location(), "/history?purpose=TREAT");
    let english = browser.get(&format!("{}/history", portal.url)).await;
    assert!(english.body.contains("<html lang=\"en\">") && english.body.contains("Sign out"));
    let elsewhere = browser
        .get(&format!(
            "{}/lang?to=en&back=%2F%2Fevil.example",
            portal.url
        ))
        .await;
    assert_eq!(elsewhere.location(), "/");

    // Signing out needs the session's CSRF token.
    let csrf = english.hidden("csrf");
    let forged = browser
        .post(
            &format!("{}/logout", portal.url),
            &[("csrf", "not-the-token")],
        )
        .await;
    assert_eq!(forged.status, 403);
    let out = browser
        .post(&format!("{}/logout", portal.url), &[("csrf", &csrf)])
        .await;
    assert_eq!(out.location(), "/?signed_out=1");
    let after = browser.get(&format!("{}/history", portal.url)).await;
    assert_eq!(after.location(), "/");

    // Sessions end after the idle time.
    browser.sign_in(&portal, "38001085718").await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let expired = browser.get(&format!("{}/history", portal.url)).await;
    assert_eq!(expired.location(), "/?expired=1");
    let notice = browser.get(&format!("{}/?expired=1", portal.url)).await;
    assert!(
        notice.body.contains("session has expired"),
        "{}",
        notice.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_entries_proofs_reports_exports_and_privacy() {
    let backbone = Backbone::start().await;
    backbone.access(PERSON, "TREAT", Some(PHARMACIST)).await;
    backbone.access(PERSON, "ETREAT", Some(PHARMACIST)).await;
    for _ in 0..22 {
        backbone.access(PERSON, "HPAYMT", None).await;
    }
    backbone.access(OTHER_PERSON, "TREAT", None).await;
    backbone.stamp().await;
    let data = tempfile::tempdir().unwrap();
    let portal = backbone
        .portal(data.path().to_path_buf(), Duration::from_secs(600))
        .await;
    let mut browser = Browser::new();
    browser
        .get(&format!("{}/lang?to=en&back=/", portal.url))
        .await;
    let history = browser.sign_in(&portal, "38001085718").await;
    let body = &history.body;

    // The fund's gateway does not answer: named, and the rest still shows.
    assert!(
        body.contains("Health Insurance Fund — not available right now"),
        "{body}"
    );
    // 24 accesses, each logged by the pharmacy (client) and the hospital (provider): merged.
    assert!(
        body.contains("Records found: <strong>24</strong>"),
        "{body}"
    );
    assert_eq!(entry_keys(body).len(), 20, "a page holds 20");
    assert!(body.contains("Town Pharmacy") && body.contains("Your patient record"));
    assert!(
        !body.contains("You (through this portal)"),
        "the portal's own questions are hidden by default"
    );
    let page2 = browser.get(&format!("{}/history?page=2", portal.url)).await;
    assert_eq!(entry_keys(&page2.body).len(), 4);
    assert!(page2.body.contains("rel=\"prev\""));

    // Filters: emergency only, purpose, institution, dates, and the portal's own questions.
    let emergency = browser
        .get(&format!("{}/history?emergency=1", portal.url))
        .await;
    assert_eq!(entry_keys(&emergency.body).len(), 1);
    assert!(
        emergency.body.contains("Emergency access</p>")
            && emergency.body.contains("For emergency treatment")
    );
    assert!(emergency.body.contains(PHARMACIST));
    let treat = browser
        .get(&format!("{}/history?purpose=TREAT", portal.url))
        .await;
    assert_eq!(entry_keys(&treat.body).len(), 1);
    let elsewhere = browser
        .get(&format!(
            "{}/history?institution=EE%2FGOV%2F70000001",
            portal.url
        ))
        .await;
    assert_eq!(entry_keys(&elsewhere.body).len(), 0);
    let past = browser
        .get(&format!(
            "{}/history?from=2001-01-01&to=2001-12-31",
            portal.url
        ))
        .await;
    assert!(past.body.contains("No records found."));
    let today = backbone_portal::local_time::date(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    );
    let now = browser
        .get(&format!("{}/history?from={today}&to={today}", portal.url))
        .await;
    assert!(
        now.body.contains("Records found: <strong>24</strong>"),
        "{}",
        now.body
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mine = browser.get(&format!("{}/history?mine=1", portal.url)).await;
    assert!(
        mine.body.contains("You (through this portal)"),
        "{}",
        mine.body
    );

    // An entry: both agencies' records verified, the proof downloaded and checked offline by
    // the real `backbone ksi verify`.
    let key = entry_keys(&emergency.body).remove(0);
    let entry = browser.get(&format!("{}/entries/{key}", portal.url)).await;
    assert_eq!(entry.status, 200, "{}", entry.body);
    assert_eq!(
        entry
            .body
            .matches("Verified: the record is unchanged")
            .count(),
        1,
        "{}",
        entry.body
    );
    assert_eq!(
        entry.body.matches("</span>Verified</span>").count(),
        2,
        "each of the two agencies' records: {}",
        entry.body
    );
    assert!(
        entry.body.contains("North Estonia Medical Centre")
            && entry.body.contains("requester")
            && entry.body.contains("data holder")
    );
    let imprint = entry
        .body
        .split("--hash ")
        .nth(1)
        .unwrap()
        .split([' ', '<'])
        .next()
        .unwrap()
        .to_owned();
    assert!(
        imprint.starts_with("01") && imprint.len() == 66,
        "{imprint}"
    );
    let proof = browser
        .get(&format!("{}/entries/{key}/proof/0.ksig", portal.url))
        .await;
    assert_eq!(proof.status, 200);
    assert!(
        proof.headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".ksig")
    );
    let file = data.path().join("access.ksig");
    std::fs::write(&file, &proof.bytes).unwrap();
    let certificate = browser
        .get(&format!("{}/calendar-certificate.der", portal.url))
        .await;
    let certificate_file = data.path().join("calendar.der");
    std::fs::write(&certificate_file, &certificate.bytes).unwrap();
    assert!(entry.body.contains("--cert calendar.der"));
    for trust in [
        vec!["--cert".to_owned(), certificate_file.display().to_string()],
        vec!["--policy".to_owned(), "internal".to_owned()],
    ] {
        let output = std::process::Command::new(common::backbone_binary())
            .args(["ksi", "verify"])
            .arg(&file)
            .args(["--hash", &imprint])
            .args(&trust)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "backbone ksi verify {trust:?}: {said}"
        );
    }
    let mut flipped = imprint.clone();
    flipped.replace_range(65..66, if imprint.ends_with('0') { "1" } else { "0" });
    let output = std::process::Command::new(common::backbone_binary())
        .args(["ksi", "verify"])
        .arg(&file)
        .args(["--hash", &flipped, "--policy", "internal"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "another hash must not verify");
    let json = browser
        .get(&format!("{}/entries/{key}/proof/1.json", portal.url))
        .await;
    let json: serde_json::Value = serde_json::from_slice(&json.bytes).unwrap();
    assert!(json["proof"]["ksiSignature"].is_string() && json["record"]["hash"].is_string());

    // Reporting it: CSRF, a reason required, stored and acknowledged, kept across a restart.
    let form = browser
        .get(&format!("{}/entries/{key}/report", portal.url))
        .await;
    let csrf = form.hidden("csrf");
    let forged = browser
        .post(
            &format!("{}/entries/{key}/report", portal.url),
            &[("csrf", "x"), ("reason", "never there")],
        )
        .await;
    assert_eq!(forged.status, 403);
    let empty = browser
        .post(
            &format!("{}/entries/{key}/report", portal.url),
            &[("csrf", &csrf), ("reason", "  ")],
        )
        .await;
    assert_eq!(empty.status, 400);
    assert!(empty.body.contains("Please write why"));
    let sent = browser
        .post(
            &format!("{}/entries/{key}/report", portal.url),
            &[
                ("csrf", &csrf),
                ("reason", "I was not at a <pharmacy> that day"),
            ],
        )
        .await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let acknowledged = browser
        .get(&format!("{}{}", portal.url, sent.location()))
        .await;
    assert!(acknowledged.body.contains("Your report has been received"));
    assert!(acknowledged.body.contains("Received, waiting for review"));
    assert!(
        acknowledged
            .body
            .contains("I was not at a &lt;pharmacy&gt; that day")
    );
    let reopened =
        backbone_portal::reports::ReportStore::open(data.path().join("reports")).unwrap();
    let stored = reopened.for_subject(PERSON).unwrap();
    assert_eq!((stored.len(), stored[0].entry.as_str()), (1, key.as_str()));
    // A person holds at most MAX_PER_PERSON open reports: the store's bound is enforced.
    for n in 1..backbone_portal::reports::MAX_PER_PERSON {
        reopened
            .put(&backbone_portal::reports::Report {
                id: format!("R-{n:08}"),
                ..stored[0].clone()
            })
            .unwrap();
    }
    let over = browser
        .post(
            &format!("{}/entries/{key}/report", portal.url),
            &[("csrf", &csrf), ("reason", "one more")],
        )
        .await;
    assert_eq!(over.status, 400);
    assert!(over.body.contains("200 open reports"), "{}", over.body);
    assert_eq!(
        reopened.for_subject(PERSON).unwrap().len(),
        backbone_portal::reports::MAX_PER_PERSON,
        "nothing more was stored"
    );
    for n in 1..backbone_portal::reports::MAX_PER_PERSON {
        std::fs::remove_file(data.path().join("reports").join(format!("R-{n:08}.json"))).unwrap();
    }

    // Exports, with the filters.
    let csv = browser
        .get(&format!("{}/export.csv?emergency=1", portal.url))
        .await;
    assert_eq!(csv.body.lines().count(), 2, "{}", csv.body);
    assert!(csv.body.contains("For emergency treatment") && csv.body.contains(PHARMACIST));
    let fhir = browser
        .get(&format!("{}/export.fhir.json", portal.url))
        .await;
    let bundle: serde_json::Value = serde_json::from_slice(&fhir.bytes).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 24);
    assert_eq!(
        bundle["entry"][0]["resource"]["entity"][0]["what"]["identifier"]["value"],
        "38001085718"
    );

    // The portal's own views are logged.
    let views = std::fs::read_to_string(data.path().join(backbone_portal::viewlog::FILE)).unwrap();
    for view in [
        "\"history\"",
        "\"entry\"",
        "\"proof\"",
        "\"report\"",
        "\"export.csv\"",
        "\"export.fhir\"",
    ] {
        assert!(views.contains(view), "{view} in {views}");
    }
    assert!(!views.contains("38001085718"));

    // Another person sees only their own, by every route.
    let mut other = Browser::new();
    let theirs = other.sign_in(&portal, "49002124277").await;
    assert!(
        theirs.body.contains("<strong>1</strong>"),
        "{}",
        theirs.body
    );
    assert!(!entry_keys(&theirs.body).contains(&key));
    for path in [
        format!("/entries/{key}"),
        format!("/entries/{key}/proof/0.ksig"),
        format!("/entries/{key}/proof/0.json"),
        format!("/entries/{key}/report"),
    ] {
        let page = other.get(&format!("{}{path}", portal.url)).await;
        assert_eq!(page.status, 404, "{path}");
    }
    let their_csrf = theirs.hidden("csrf");
    let report = other
        .post(
            &format!("{}/entries/{key}/report", portal.url),
            &[("csrf", &their_csrf), ("reason", "x")],
        )
        .await;
    assert_eq!(report.status, 404);
    let reports = other.get(&format!("{}/reports", portal.url)).await;
    assert!(!reports.body.contains(&stored[0].id));
    let csv = other.get(&format!("{}/export.csv", portal.url)).await;
    assert_eq!(csv.body.lines().count(), 2);
    assert!(!csv.body.contains(PHARMACIST));
    let fhir = other.get(&format!("{}/export.fhir.json", portal.url)).await;
    assert!(!fhir.body.contains("38001085718") && fhir.body.contains("49002124277"));
    // A signed-out browser gets nothing.
    let mut nobody = Browser::new();
    for path in [
        format!("/entries/{key}"),
        "/export.csv".to_owned(),
        "/reports".to_owned(),
    ] {
        assert_eq!(
            nobody.get(&format!("{}{path}", portal.url)).await.status,
            303,
            "{path}"
        );
    }
}

/// The test OpenID provider over HTTP: discovery and keys, the authorization request checked
/// before anyone picks a person, and the token endpoint refusing a wrong PKCE verifier, a wrong
/// secret, another redirect URI and a code used twice.
mod provider_over_http {
    use std::sync::Arc;

    use backbone_portal::oidc::client::check_claims;
    use backbone_portal::oidc::jws::{self, JwkSet, b64};
    use backbone_portal::oidc::provider::{self, Provider, RegisteredClient};
    use sha2::{Digest, Sha256};

    const REDIRECT: &str = "http://localhost:1/oidc/callback";

    async fn provider() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let client = RegisteredClient {
            id: "portal".into(),
            secret: "s3cret".into(),
            redirect_uris: vec![REDIRECT.into()],
        };
        let app = provider::router(Arc::new(Provider::new(&url, vec![client]).unwrap()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// Authorizes `person` with a PKCE challenge of `verifier`; the code.
    async fn code(url: &str, verifier: &str, person: &str) -> String {
        let challenge = b64(&Sha256::digest(verifier.as_bytes()));
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", "portal"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "st"),
            ("nonce", "nn"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .unwrap();
        let page = http()
            .get(format!("{url}/authorize?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("form-action 'self' http://localhost:1"),
            "{csp}"
        );
        let body = page.text().await.unwrap();
        let request = body
            .split("name=\"request\" value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        let back = http()
            .post(format!("{url}/authorize"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                serde_urlencoded::to_string([("request", request.as_str()), ("person", person)])
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(back.status(), 303);
        let location = back.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(REDIRECT) && location.contains("state=st"),
            "{location}"
        );
        location
            .split("code=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned()
    }

    async fn token(url: &str, form: &[(&str, &str)], secret: &str) -> (u16, serde_json::Value) {
        let basic = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("portal:{secret}"),
        );
        let response = http()
            .post(format!("{url}/token"))
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(),
        )
    }

    #[tokio::test]
    async fn the_token_endpoint_checks_pkce_secret_redirect_and_single_use() {
        let url = provider().await;
        let discovery: serde_json::Value = serde_json::from_slice(
            &http()
                .get(format!("{url}/.well-known/openid-configuration"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(discovery["issuer"], url);
        assert_eq!(discovery["code_challenge_methods_supported"][0], "S256");
        let keys: JwkSet = serde_json::from_slice(
            &http()
                .get(format!("{url}/jwks"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();

        let verifier = "v".repeat(64);
        let exchange = |code: String, verifier: String, redirect: &'static str| {
            move || {
                vec![
                    ("grant_type", "authorization_code".to_owned()),
                    ("code", code.clone()),
                    ("redirect_uri", redirect.to_owned()),
                    ("code_verifier", verifier.clone()),
                ]
            }
        };
        let as_refs = |form: &Vec<(&'static str, String)>| {
            form.iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect::<Vec<_>>()
        };

        // A wrong verifier, a wrong secret, another redirect URI: refused, and the code is spent.
        for (verifier_sent, secret, redirect, error) in [
            ("w".repeat(64), "s3cret", REDIRECT, "invalid_grant"),
            (verifier.clone(), "wrong", REDIRECT, "invalid_client"),
            (
                verifier.clone(),
                "s3cret",
                "http://localhost:2/cb",
                "invalid_grant",
            ),
        ] {
            let code = code(&url, &verifier, "38001085718").await;
            let form = as_refs(&exchange(code, verifier_sent, redirect)());
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, answer) = token(&url, &pairs, secret).await;
            assert!(status == 400 || status == 401, "{status}");
            assert_eq!(answer["error"], error);
        }

        // The right exchange gives an ID token the portal accepts, once.
        let code = code(&url, &verifier, "49002124277").await;
        let form = as_refs(&exchange(code, verifier.clone(), REDIRECT)());
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, answer) = token(&url, &pairs, "s3cret").await;
        assert_eq!(status, 200, "{answer}");
        let claims = jws::verify(answer["id_token"].as_str().unwrap(), &keys).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let person = check_claims(&claims, &url, "portal", "nn", now).unwrap();
        assert_eq!(
            (person.subject.as_str(), person.name().as_str()),
            ("EE49002124277", "Mari-Liis Männik")
        );
        assert!(check_claims(&claims, &url, "portal", "other-nonce", now).is_err());
        let (status, answer) = token(&url, &pairs, "s3cret").await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_grant")),
            "a code works once"
        );

        // A bad authorization request never shows the picker to an unregistered redirect URI, and
        // one without PKCE goes back with an error.
        let unregistered = http().get(format!("{url}/authorize?response_type=code&client_id=portal&redirect_uri=http%3A%2F%2Fevil%2Fcb&scope=openid&state=s&nonce=n")).send().await.unwrap();
        assert_eq!(unregistered.status(), 400);
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", "portal"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "s"),
            ("nonce", "n"),
        ])
        .unwrap();
        let no_pkce = http()
            .get(format!("{url}/authorize?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(no_pkce.status(), 303);
        assert!(
            no_pkce.headers()["location"]
                .to_str()
                .unwrap()
                .contains("error=invalid_request")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_listener_drops_slow_loris_refuses_large_bodies_and_makes_floods_wait() {
    use backbone_server::{Limits, probe};
    let backbone = Backbone::start().await;
    let data = tempfile::tempdir().unwrap();
    let portal = backbone
        .portal(data.path().to_path_buf(), Duration::from_secs(60))
        .await;
    let addr: std::net::SocketAddr = portal
        .url
        .replace("http://localhost", "127.0.0.1")
        .parse()
        .unwrap();
    // The portal's limits are the defaults.
    probe::check_plain(addr, "/live", "/logout", 413, &Limits::default())
        .await
        .unwrap();
    assert_eq!(
        probe::get_status(addr, "/live", Duration::from_secs(10))
            .await
            .unwrap(),
        Some(200),
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_portals_files_are_its_own() {
    use std::os::unix::fs::PermissionsExt;
    let backbone = Backbone::start().await;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("portal");
    let portal = backbone.portal(dir.clone(), Duration::from_secs(60)).await;
    let mut browser = Browser::new();
    browser.sign_in(&portal, "38001085718").await;
    // The view log's key, the view log (keyed hashes of personal codes) and the reports.
    let mut pending = vec![dir];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 2, "the view log and its key");
}
