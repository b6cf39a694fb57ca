//! A local service over HTTPS (PR-REST 4.7, the provider's side): its certificate verified
//! against the CA the operator configured, and the gateway's own TLS certificate presented when
//! the service asks for one. A service whose certificate does not chain to that CA is never
//! called.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use backbone_gateway::log::Kind;
use backbone_gateway::signed::ResponseDescriptor;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backbone_hsm::tls::{PinSet, PinnedClientVerifier};
use backbone_server::{Limits, Protocol, Server, Transport};
use common::{Backbone, DISPENSING, PING};

/// A CA and a certificate it issued for 127.0.0.1.
fn ca_and_server() -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    rcgen::KeyPair,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Hospital services CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    (ca_cert.pem(), server_cert.der().clone(), server_key)
}

/// An HTTPS service that demands a client certificate pinned to `client` and counts its calls.
async fn https_service(
    server_cert: rustls::pki_types::CertificateDer<'static>,
    key: &rcgen::KeyPair,
    client: Vec<u8>,
    calls: Arc<AtomicUsize>,
) -> SocketAddr {
    let provider = backbone_hsm::tls::provider();
    let verifier = Arc::new(PinnedClientVerifier::new(
        Arc::new(PinSet::new([client])),
        &provider,
    ));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let app = axum::Router::new().fallback(move || {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            "pong over https"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::spawn(
        listener,
        Transport::Tls(Arc::new(config)),
        Protocol::Http1,
        Limits::default(),
        move |_| Some(app.clone()),
    )
    .unwrap();
    let addr = server.local_addr();
    std::mem::forget(server);
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_https_service_is_verified_and_sees_the_gateways_certificate() {
    let mut backbone = Backbone::start(Duration::from_secs(600)).await;
    let (ca_pem, server_cert, server_key) = ca_and_server();
    let ca_file = backbone.dir.path().join("services-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let conf = backbone
        .hospital
        .conf
        .current(std::time::SystemTime::now())
        .unwrap();
    let hospital_tls = conf
        .gateway(&backbone.hospital.gateway_id.parse().unwrap())
        .unwrap()
        .tls_certificate
        .as_ref()
        .unwrap()
        .der()
        .to_vec();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = https_service(server_cert, &server_key, hospital_tls, Arc::clone(&calls)).await;

    // A certificate from another CA: the service is never called.
    let (other_ca, _, _) = ca_and_server();
    let other_file = backbone.dir.path().join("other-ca.pem");
    std::fs::write(&other_file, &other_ca).unwrap();
    let tuned = |ca: std::path::PathBuf| {
        move |agency: &str, config: &mut backbone_gateway::service::GatewayConfig| {
            if agency == "hospital" {
                config.services =
                    BTreeMap::from([(PING.to_owned(), format!("https://{service}/ping"))]);
                config.service_ca = Some(ca.clone());
            }
        }
    };
    backbone.start_gateways_tuned(tuned(other_file)).await;
    backbone.grant(PING, DISPENSING, "*", "/**");
    let (status, kind, _) = common::ping(&backbone.pharmacy_client(), 0).await;
    assert_eq!(
        (status, kind.as_str()),
        (500, "Server.ServerProxy.ServiceFailed")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a service the CA does not vouch for was called"
    );
    // Both gateways logged the request before acting on it, and the fault as its one outcome:
    // raised by the hospital's gateway, signed by each logging gateway's own member.
    for agency in [&backbone.hospital, &backbone.pharmacy] {
        assert_eq!(agency.log.status().records, 2);
        let request = agency.log.record(0).unwrap().unwrap();
        let outcome = agency.log.record(1).unwrap().unwrap();
        assert_eq!(
            (request.record.kind, outcome.record.kind),
            (Kind::Request, Kind::Response)
        );
        let descriptor = ResponseDescriptor::decode(&outcome.record.descriptor).unwrap();
        assert_eq!(
            descriptor.headers,
            vec![(
                "x-road-error".to_owned(),
                "Server.ServerProxy.ServiceFailed".to_owned()
            )]
        );
        assert_eq!(descriptor.status, 500);
    }
    for agency in [&mut backbone.hospital, &mut backbone.pharmacy] {
        agency.gateway.take().unwrap().shutdown().await;
    }

    // The operator's CA: verified, and the gateway's own certificate let it in.
    backbone.start_gateways_tuned(tuned(ca_file)).await;
    backbone.grant(PING, DISPENSING, "*", "/**");
    let (status, kind, body) = common::ping(&backbone.pharmacy_client(), 0).await;
    assert_eq!(
        (status, kind.as_str(), body.as_str()),
        (200, "", "pong over https")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
