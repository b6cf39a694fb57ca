//! The done-when test: a client built from the anchor file alone downloads, verifies and refreshes
//! the configuration from a running registry, and sees a revocation within one refresh.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backbone_hsm::Signer;
use backbone_hsm::cert::{Subject, csr_der};
use backbone_registry::anchor::Anchor;
use backbone_registry::client::fetch::{self, FetchConfig};
use backbone_registry::client::{ClientConfig, ConfClient};
use backbone_registry::id::{GatewayId, InstanceId, MemberClass};
use backbone_registry::model::RevocationReason;
use backbone_registry::server::{ServeConfig, Server};
use backbone_registry::store::Store;
use backbone_registry::store::rocks::RocksStore;
use backbone_registry::{Error, Registry};

/// How long to wait for an eventual result before failing.
const PATIENCE: Duration = Duration::from_secs(10);

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_from_anchor_file_follows_the_registry_and_sees_a_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path().join("registry.db")).unwrap());
    let ca: Arc<dyn Signer> = Arc::new(common::signer("ca"));
    let conf_key: Arc<dyn Signer> = Arc::new(common::signer("conf"));
    let now = SystemTime::now();
    let registry = Registry::create(
        store,
        InstanceId::new("EE").unwrap(),
        ca,
        conf_key.clone(),
        "admin",
        now,
    )
    .unwrap();
    registry
        .add_member_class("admin", now, MemberClass::new("GOV").unwrap(), "government")
        .unwrap();
    registry
        .add_member(
            "admin",
            now,
            "EE/GOV/70000001".parse().unwrap(),
            "North hospital",
        )
        .unwrap();
    let gw: GatewayId = "EE/GOV/70000001/gw1".parse().unwrap();
    registry
        .add_gateway("admin", now, gw.clone(), "127.0.0.1:8443")
        .unwrap();
    let csr = csr_der(
        &common::signer("gw"),
        &Subject {
            common_name: "gw1".into(),
            ..Subject::default()
        },
    )
    .unwrap();
    let tls = registry
        .issue_tls_certificate("admin", now, &gw, &csr)
        .unwrap();
    let registry = Arc::new(registry);

    let config = ServeConfig {
        regenerate_every: Duration::from_secs(1),
        conf_validity: Duration::from_secs(30),
        timestamping_url: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::spawn(registry.clone(), config, listener)
        .await
        .unwrap();

    // The anchor file names a dead mirror first: the client must move on to the next URL.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let anchor = Anchor::new(
        registry.instance().clone(),
        conf_key.algorithm(),
        conf_key.public_key().clone(),
        vec![format!("http://{dead}/globalconf"), server.url()],
    )
    .unwrap();
    let anchor_path = dir.path().join("anchor.json");
    std::fs::write(&anchor_path, anchor.encode()).unwrap();
    drop(anchor);

    // The gateway side: the anchor file and a cache path, nothing else.
    let anchor = Anchor::decode(&std::fs::read(&anchor_path).unwrap()).unwrap();
    let cache = ClientConfig {
        cache_path: Some(dir.path().join("gw-cache.bin")),
        ..ClientConfig::default()
    };
    let client = Arc::new(ConfClient::open(anchor.clone(), cache.clone()).unwrap());
    assert!(
        client
            .current(SystemTime::now())
            .unwrap_err()
            .is_conf_expired(),
        "fails closed before the first download"
    );
    let refresh = FetchConfig {
        refresh_every: Duration::from_millis(500),
        backoff_min: Duration::from_millis(50),
        ..FetchConfig::default()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let refresher = tokio::spawn(fetch::run(
        client.clone(),
        refresh,
        SystemTime::now,
        stopped,
    ));

    let first = eventually("the first configuration", || {
        client.current(SystemTime::now()).ok()
    })
    .await;
    assert_eq!(
        first.gateway(&gw).unwrap().tls_certificate.as_ref(),
        Some(&tls)
    );
    // It refreshes: newer versions keep arriving.
    eventually("a newer version", || {
        client.version().filter(|v| *v > first.version)
    })
    .await;

    // Revoke; within one regeneration (1 s) plus one refresh (0.5 s) the client no longer trusts it.
    let revoked_at = Instant::now();
    registry
        .revoke(
            "admin",
            SystemTime::now(),
            &tls.serial(),
            RevocationReason::KeyCompromise,
        )
        .unwrap();
    let seen = eventually("the revocation", || {
        client
            .current(SystemTime::now())
            .ok()
            .filter(|c| c.is_revoked(&tls.serial()))
    })
    .await;
    assert!(
        revoked_at.elapsed() < Duration::from_millis(1500 + 1000),
        "took {:?}",
        revoked_at.elapsed()
    );
    assert!(seen.gateway(&gw).unwrap().tls_certificate.is_none());

    let _ = stop.send(true);
    refresher.await.unwrap();
    server.shutdown().await;

    // A restarted gateway starts from its cache with the revocation, and refuses older versions.
    let restarted = ConfClient::open(anchor, cache).unwrap();
    assert!(
        restarted
            .current(SystemTime::now())
            .unwrap()
            .is_revoked(&tls.serial())
    );
    let older = registry
        .generate(SystemTime::now(), Duration::from_secs(30))
        .unwrap();
    assert!(
        older
            .verify(conf_key.public_key(), registry.instance())
            .unwrap()
            .version
            > seen.version
    );
}

#[tokio::test]
async fn refresh_reports_every_url_that_failed() {
    let key = common::signer("conf");
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let anchor = Anchor::new(
        InstanceId::new("EE").unwrap(),
        key.algorithm(),
        key.public_key().clone(),
        vec![format!("http://{dead}/a"), format!("http://{dead}/b")],
    )
    .unwrap();
    let client = ConfClient::new(anchor, ClientConfig::default());
    let err = fetch::refresh_once(&client, &reqwest::Client::new(), SystemTime::now())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fetch(_)));
    let text = err.to_string();
    assert!(text.contains("/a:") && text.contains("/b:"), "{text}");
}

#[test]
fn serve_settings_are_checked() {
    assert!(ServeConfig::default().check().is_ok());
    let bad = ServeConfig {
        regenerate_every: Duration::from_secs(60),
        conf_validity: Duration::from_secs(60),
        timestamping_url: None,
    };
    assert!(
        bad.check()
            .unwrap_err()
            .to_string()
            .contains("registry.conf_validity (60 s) must be longer")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_server_drops_slow_loris_refuses_large_bodies_and_makes_floods_wait() {
    use backbone_server::{Limits, probe};
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path().join("registry.db")).unwrap());
    let now = SystemTime::now();
    let registry = Registry::create(
        store,
        InstanceId::new("EE").unwrap(),
        Arc::new(common::signer("ca")),
        Arc::new(common::signer("conf")),
        "admin",
        now,
    )
    .unwrap();
    let limits = Limits {
        head_timeout: Duration::from_secs(2),
        max_connections: 8,
        max_body: 1024,
        ..Limits::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::spawn_with_limits(
        Arc::new(registry),
        ServeConfig::default(),
        listener,
        limits.clone(),
    )
    .await
    .unwrap();
    probe::check_plain(
        server.local_addr(),
        "/globalconf",
        "/globalconf",
        413,
        &limits,
    )
    .await
    .unwrap();
    assert_eq!(
        probe::get_status(server.local_addr(), "/globalconf", PATIENCE)
            .await
            .unwrap(),
        Some(200),
        "still serving"
    );
    server.shutdown().await;
}
