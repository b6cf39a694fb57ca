//! Sign-in against an OpenID provider over HTTPS: the test provider served over TLS on 127.0.0.1
//! with a certificate from a CA made in the test. The portal signs in when it trusts that CA;
//! with the system's CA bundle, with a certificate for another name, with a redirecting or
//! oversized answer, or when no answer comes, it refuses with an error naming the URL; plain
//! HTTP to another host than this one is refused before the portal starts, by the library and by
//! `backbone portal serve`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{KeyStore, KeyType};
use backbone_portal::Error;
use backbone_portal::history::BackboneConfig;
use backbone_portal::i18n::Lang;
use backbone_portal::oidc::client::{OidcClient, OidcConfig};
use backbone_portal::oidc::provider::{self, Provider, RegisteredClient};
use backbone_portal::oidc::transport::{self, DEFAULT_CA_FILE, Transport, TransportError};
use backbone_portal::server::{self, Portal, PortalConfig};
use backbone_registry::anchor::Anchor;
use backbone_registry::client::{ClientConfig, ConfClient};
use common::{Browser, PORTAL};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A CA made for one test, its certificate in `ca.pem`.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    certificate: CertificateDer<'static>,
    pem: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Backbone test OpenID CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let certificate = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, certificate.pem()).unwrap();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            certificate: certificate.der().clone(),
            pem,
            _dir: dir,
        }
    }

    /// A server configuration with a certificate for `names`, offering `versions`.
    fn server(
        &self,
        names: &[&str],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), self.certificate.clone()], private)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Accepts TCP on a listener and completes the TLS handshake; failed handshakes are skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(Ok(stream)) = tokio::time::timeout(TIMEOUT, self.acceptor.accept(tcp)).await {
                return (stream, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Serves `app` over TLS on 127.0.0.1; the port.
async fn serve_tls(app: Router, tls: Arc<rustls::ServerConfig>) -> u16 {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(tls),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// The test provider at `https://localhost:PORT`, over TLS with `tls`, knowing `redirect_uri`.
async fn https_provider(tls: Arc<rustls::ServerConfig>, redirect_uri: &str) -> String {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("https://localhost:{}", tcp.local_addr().unwrap().port());
    let client = RegisteredClient {
        id: "portal".into(),
        secret: "portal-secret".into(),
        redirect_uris: vec![redirect_uri.to_owned()],
    };
    let app = provider::router(Arc::new(Provider::new(&issuer, vec![client]).unwrap()));
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(tls),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

fn oidc_config(issuer: &str, redirect_uri: &str, ca_file: &Path) -> OidcConfig {
    OidcConfig {
        issuer: issuer.to_owned(),
        client_id: "portal".into(),
        client_secret: "portal-secret".into(),
        redirect_uri: redirect_uri.to_owned(),
        ca_file: ca_file.to_owned(),
    }
}

/// A global configuration client that never got a configuration: sign-in does not need one.
fn empty_conf(dir: &Path) -> Arc<ConfClient> {
    let keys = SoftwareKeyStore::open(dir.join("conf-keys")).unwrap();
    keys.generate("conf", KeyType::EcP256).unwrap();
    let signer = keys.signer("conf", None).unwrap();
    let anchor = Anchor::new(
        backbone_registry::id::InstanceId::new("EE").unwrap(),
        signer.algorithm(),
        signer.public_key().clone(),
        vec!["http://127.0.0.1:1/globalconf".into()],
    )
    .unwrap();
    Arc::new(ConfClient::new(anchor, ClientConfig::default()))
}

/// A portal on `http://localhost:PORT` signing in through `issuer`, trusting `ca_file`.
async fn start_portal(
    dir: &Path,
    listener: tokio::net::TcpListener,
    issuer: &str,
    ca_file: &Path,
) -> String {
    let url = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let config = PortalConfig {
        backbone: BackboneConfig {
            gateway: backbone_gateway::connect::GatewayClient::plain("127.0.0.1:1").unwrap(),
            client: PORTAL.into(),
            limit: 500,
            timeout: TIMEOUT,
        },
        oidc: oidc_config(issuer, &format!("{url}/oidc/callback"), ca_file),
        data_dir: dir.join("portal"),
        idle_timeout: Duration::from_secs(60),
        history_cache: Duration::from_secs(1),
    };
    let portal = Arc::new(
        Portal::new(
            config,
            empty_conf(dir),
            backbone_portal::proof::Trust::default(),
        )
        .unwrap(),
    );
    let app = server::router(portal);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_works_over_https_with_the_providers_ca_trusted() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let portal_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_uri = format!(
        "http://localhost:{}/oidc/callback",
        portal_listener.local_addr().unwrap().port()
    );
    let issuer = https_provider(
        ca.server(&["localhost"], &[&rustls::version::TLS13]),
        &redirect_uri,
    )
    .await;
    let portal = start_portal(dir.path(), portal_listener, &issuer, &ca.pem).await;

    // The portal fetched the discovery document over HTTPS and sends the browser there.
    let mut browser = Browser::new();
    let login = browser.get(&format!("{portal}/login")).await;
    assert_eq!(login.status, 303, "{}", login.body);
    let authorize = login.location();
    assert!(
        authorize.starts_with(&format!("{issuer}/authorize?")),
        "{authorize}"
    );

    // The person picks at the provider (the browser's part, over the same TLS).
    let provider_browser = Transport::new(Some(&ca.pem), TIMEOUT).unwrap();
    let picker = provider_browser.get(&authorize).await.unwrap();
    assert_eq!(picker.status, 200);
    let picker = String::from_utf8(picker.body).unwrap();
    let marker = "name=\"request\" value=\"";
    let request = picker[picker.find(marker).unwrap() + marker.len()..]
        .split('"')
        .next()
        .unwrap();
    let form =
        serde_urlencoded::to_string([("request", request), ("person", "38001085718")]).unwrap();
    let back = provider_browser
        .post_form(&format!("{issuer}/authorize"), &[], form)
        .await
        .unwrap();
    assert_eq!(back.status, 303);
    let callback = back.headers["location"].to_str().unwrap().to_owned();
    assert!(callback.starts_with(&redirect_uri), "{callback}");

    // The portal exchanges the code at the token endpoint and checks the ID token under the
    // JWKS, both over HTTPS: the person is signed in.
    let signed_in = browser.get(&callback).await;
    assert_eq!(
        (signed_in.status, signed_in.location().as_str()),
        (303, "/history"),
        "{}",
        signed_in.body
    );
    assert!(
        signed_in
            .headers
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().contains("HttpOnly"))
    );
}

#[tokio::test]
async fn the_system_bundle_does_not_trust_the_test_ca() {
    assert!(
        Path::new(DEFAULT_CA_FILE).exists(),
        "{DEFAULT_CA_FILE} is missing: install Debian's ca-certificates"
    );
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let portal_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_uri = format!(
        "http://localhost:{}/oidc/callback",
        portal_listener.local_addr().unwrap().port()
    );
    let issuer = https_provider(
        ca.server(&["localhost"], &[&rustls::version::TLS13]),
        &redirect_uri,
    )
    .await;

    let client = OidcClient::new(
        oidc_config(&issuer, &redirect_uri, Path::new(DEFAULT_CA_FILE)),
        TIMEOUT,
    )
    .unwrap();
    let error = client.begin(Lang::En).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Provider {
                source: TransportError::Tls { .. },
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    for part in [
        format!("{issuer}/.well-known/openid-configuration"),
        "UnknownIssuer".into(),
        DEFAULT_CA_FILE.into(),
    ] {
        assert!(message.contains(&part), "{part} not in: {message}");
    }

    // Through the portal, the sign-in page says it cannot sign in now.
    let portal = start_portal(
        dir.path(),
        portal_listener,
        &issuer,
        Path::new(DEFAULT_CA_FILE),
    )
    .await;
    let login = Browser::new().get(&format!("{portal}/login")).await;
    assert_eq!(login.status, 503, "{}", login.body);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let ca = TestCa::new();
    let issuer = https_provider(
        ca.server(&["tara.example"], &[&rustls::version::TLS13]),
        "http://localhost:1/oidc/callback",
    )
    .await;
    let client = OidcClient::new(
        oidc_config(&issuer, "http://localhost:1/oidc/callback", &ca.pem),
        TIMEOUT,
    )
    .unwrap();
    let message = client.begin(Lang::En).await.unwrap_err().to_string();
    assert!(
        message.contains("not valid for name")
            && message.contains("localhost")
            && message.contains(&issuer),
        "{message}"
    );
}

#[tokio::test]
async fn tls_1_2_redirects_sizes_and_timeouts() {
    let ca = TestCa::new();
    let app = Router::new()
        .route("/ok", axum::routing::get(|| async { "{}" }))
        .route(
            "/big",
            axum::routing::get(|| async { "x".repeat(transport::MAX_RESPONSE + 1) }),
        )
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(|| async {
                axum::response::Redirect::to("https://elsewhere.example/")
            }),
        );
    let port = serve_tls(app, ca.server(&["localhost"], &[&rustls::version::TLS12])).await;
    let base = format!("https://localhost:{port}");
    let http = Transport::new(Some(&ca.pem), TIMEOUT).unwrap();

    // A server that speaks TLS 1.2 only.
    let ok = http.get(&format!("{base}/ok")).await.unwrap();
    assert_eq!(
        (ok.status.as_u16(), ok.body.as_slice()),
        (200, b"{}".as_slice())
    );

    let error = http.get(&format!("{base}/big")).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Provider {
                source: TransportError::TooLarge {
                    limit: transport::MAX_RESPONSE
                },
                ..
            }
        ),
        "{error:?}"
    );

    let client = OidcClient::new(
        oidc_config(&base, "http://localhost:1/oidc/callback", &ca.pem),
        TIMEOUT,
    )
    .unwrap();
    let message = client.begin(Lang::En).await.unwrap_err().to_string();
    assert!(
        message.contains("redirects are not followed") && message.contains("elsewhere.example"),
        "{message}"
    );

    // A server that accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://localhost:{}/", silent.local_addr().unwrap().port());
    let error = Transport::new(Some(&ca.pem), Duration::from_millis(300))
        .unwrap()
        .get(&url)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Provider {
                source: TransportError::Timeout(_),
                ..
            }
        ),
        "{error:?}"
    );
    drop(silent);
}

#[test]
fn plain_http_to_another_host_is_refused_at_start_up() {
    let config = oidc_config(
        "http://tara.example/oidc",
        "http://localhost:1/oidc/callback",
        Path::new(DEFAULT_CA_FILE),
    );
    let error = OidcClient::new(config, TIMEOUT).unwrap_err().to_string();
    assert!(
        error.contains("portal.oidc.issuer")
            && error.contains("plain http is allowed only to a loopback host"),
        "{error}"
    );

    // The same from `backbone portal serve`, before any file is read or socket bound (exit 64).
    let dir = tempfile::tempdir().unwrap();
    let serve = |issuer: &str, ca_file: &str| {
        std::process::Command::new(common::backbone_binary())
            .args([
                "portal",
                "serve",
                "--anchor",
                "missing-anchor.json",
                "--client",
                PORTAL,
                "--gateway",
                "http://127.0.0.1:1",
            ])
            .args([
                "--oidc-issuer",
                issuer,
                "--oidc-client-secret-file",
                "missing-secret",
                "--oidc-ca-file",
                ca_file,
            ])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let refused = serve("http://tara.example/oidc", DEFAULT_CA_FILE);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--oidc-issuer")
            && stderr.contains("http://tara.example/oidc")
            && stderr.contains("loopback"),
        "{stderr}"
    );

    let refused = serve("https://tara.example/oidc", "missing-ca.pem");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--oidc-ca-file") && stderr.contains("missing-ca.pem"),
        "{stderr}"
    );
}
