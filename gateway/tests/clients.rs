//! Information systems on the client port, tried as an attacker on the agency's network would
//! (PR-REST 4.7; X-Road's connection types `HTTPS`, `HTTPS_NO_AUTH`, `HTTP`): an impersonated
//! client, a missing or foreign certificate, plain HTTP where HTTPS is required, a plain listener
//! off loopback. Each is refused with `Client.SslAuthenticationFailed` (or never gets an HTTP
//! answer), nothing reaches the provider, nothing is logged. Changes made by another process on
//! the same data directory take effect without a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backbone_gateway::connect::GatewayClient;
use backbone_gateway::service::{GatewayConfig, StartError};
use backbone_gateway::systems::{Connection, SystemsStore};
use backbone_hsm::tls::PinSet;
use common::{Backbone, DISPENSING, PHARMACY, PING};

/// A ping to the hospital through `client`, naming `as_client`: status and fault type.
async fn ping_as(client: &GatewayClient, as_client: &str) -> (u16, String) {
    let answer = client
        .get(format!("/r1/{PING}/x"))
        .header("X-Road-Client", as_client)
        .send()
        .await
        .unwrap();
    (
        answer.status.as_u16(),
        answer.fault_type().unwrap_or_default().to_owned(),
    )
}

fn refused() -> (u16, String) {
    (400, "Client.SslAuthenticationFailed".to_owned())
}

/// Retries `check` for up to three seconds (a running gateway reads the file every second).
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn backbone() -> Backbone {
    let mut backbone = Backbone::start(Duration::from_secs(600)).await;
    backbone
        .start_gateways_tuned(|_, config: &mut GatewayConfig| {
            config.client_plain_listen = Some("127.0.0.1:0".parse().unwrap());
        })
        .await;
    backbone.grant(PING, DISPENSING, "*", "/**");
    backbone
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_certificate_registered_for_the_named_client_speaks_for_it() {
    let backbone = backbone().await;
    let pharmacy = &backbone.pharmacy;
    let gateway = pharmacy.gateway.as_ref().unwrap();
    let address = gateway.client_addr().to_string();
    let pinned = || Arc::new(PinSet::new([pharmacy.gateway_cert.clone()]));
    let own = backbone.pharmacy_client();
    assert_eq!(ping_as(&own, DISPENSING).await, (200, String::new()));
    let (hospital_records, pharmacy_records) = (
        backbone.hospital.log.status().records,
        pharmacy.log.status().records,
    );

    // The dispensing system names its own member (a registered client too): not its certificate.
    assert_eq!(ping_as(&own, PHARMACY).await, refused());
    // No certificate at all.
    let anonymous = GatewayClient::https_no_auth(&address, pinned()).unwrap();
    assert_eq!(ping_as(&anonymous, DISPENSING).await, refused());
    // A certificate of another key, valid and self-signed like the registered one.
    let stranger = GatewayClient::https(
        &address,
        Arc::clone(&backbone.hospital.system_key),
        backbone.hospital.system_cert.clone(),
        pinned(),
    )
    .unwrap();
    assert_eq!(ping_as(&stranger, DISPENSING).await, refused());
    // Plain HTTP on the HTTPS port gets no HTTP answer at all.
    let plain_on_tls = GatewayClient::plain(&address).unwrap();
    assert!(
        plain_on_tls
            .get(format!("/r1/{PING}/x"))
            .header("X-Road-Client", DISPENSING)
            .send()
            .await
            .is_err()
    );
    // Plain HTTP on the plain listener, for a client that must use HTTPS.
    let plain = GatewayClient::plain(&gateway.client_plain_addr().unwrap().to_string()).unwrap();
    assert_eq!(ping_as(&plain, DISPENSING).await, refused());
    // A client this gateway does not serve, even with a certificate registered for it by an
    // operator's mistake, is still not served.
    gateway
        .systems()
        .add_certificate(
            &"EE/GOV/70000001/ehr".parse().unwrap(),
            &pharmacy.system_cert,
        )
        .unwrap();
    assert_eq!(
        ping_as(&own, "EE/GOV/70000001/ehr").await,
        (400, "Client.UnknownMember".to_owned())
    );

    assert_eq!(
        (
            backbone.hospital.log.status().records,
            pharmacy.log.status().records
        ),
        (hospital_records, pharmacy_records),
        "a refused caller's request was logged (or reached the provider)"
    );
    assert_eq!(ping_as(&own, DISPENSING).await, (200, String::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_types_and_certificates_change_without_a_restart() {
    let backbone = backbone().await;
    let pharmacy = &backbone.pharmacy;
    let gateway = pharmacy.gateway.as_ref().unwrap();
    let address = gateway.client_addr().to_string();
    let own = backbone.pharmacy_client();
    let anonymous = GatewayClient::https_no_auth(
        &address,
        Arc::new(PinSet::new([pharmacy.gateway_cert.clone()])),
    )
    .unwrap();
    let plain = GatewayClient::plain(&gateway.client_plain_addr().unwrap().to_string()).unwrap();
    let dispensing = DISPENSING.parse().unwrap();

    // What `backbone gateway` verbs do: another store on the same file, another process.
    let cli = SystemsStore::open(pharmacy.dir.join("information-systems.json")).unwrap();

    // https-no-auth: TLS without a certificate; plain HTTP still refused.
    assert!(
        cli.set_connection(&dispensing, Connection::HttpsNoAuth)
            .unwrap()
    );
    assert!(eventually(async || ping_as(&anonymous, DISPENSING).await.0 == 200).await);
    assert_eq!(ping_as(&plain, DISPENSING).await, refused());
    assert_eq!(ping_as(&own, DISPENSING).await, (200, String::new()));

    // http: plain HTTP on the loopback listener too.
    assert!(cli.set_connection(&dispensing, Connection::Http).unwrap());
    assert!(eventually(async || ping_as(&plain, DISPENSING).await.0 == 200).await);

    // Back to https, and the certificate removed: the system is locked out.
    assert!(cli.set_connection(&dispensing, Connection::Https).unwrap());
    assert!(eventually(async || ping_as(&plain, DISPENSING).await == refused()).await);
    assert_eq!(ping_as(&own, DISPENSING).await, (200, String::new()));
    let listed = cli.snapshot().list();
    let fingerprint = listed
        .iter()
        .find(|l| l.client == DISPENSING)
        .unwrap()
        .certificates[0]
        .sha256
        .clone();
    assert!(cli.remove_certificate(&dispensing, &fingerprint).unwrap());
    assert!(eventually(async || ping_as(&own, DISPENSING).await == refused()).await);

    // Registered again: let in again.
    assert!(
        cli.add_certificate(&dispensing, &pharmacy.system_cert)
            .unwrap()
    );
    assert!(eventually(async || ping_as(&own, DISPENSING).await.0 == 200).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_http_is_served_only_on_a_loopback_address() {
    let mut backbone = Backbone::start(Duration::from_secs(600)).await;
    // Any address of this machine that is not loopback, if it has one; else a documentation
    // address, which cannot be bound: either way the gateway must refuse before binding.
    let outside: std::net::SocketAddr = "192.0.2.1:0".parse().unwrap();
    let pharmacy = &mut backbone.pharmacy;
    let mut config = GatewayConfig::new(
        pharmacy.gateway_id.parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        format!("127.0.0.1:{}", pharmacy.peer_port).parse().unwrap(),
        pharmacy.dir.join("access-rights.json"),
    );
    config.client_plain_listen = Some(outside);
    let started = backbone_gateway::service::RunningGateway::start(
        config,
        backbone_gateway::conf::Trust::new(
            Arc::clone(&pharmacy.conf),
            pharmacy.gateway_id.parse().unwrap(),
        ),
        backbone_gateway::service::GatewayKeys {
            tls: Arc::clone(&pharmacy.tls),
            signing: Arc::clone(&pharmacy.signing),
        },
        Arc::clone(&pharmacy.log),
        prometheus::Registry::new(),
    )
    .await;
    assert!(
        matches!(started, Err(StartError::PlainNotLoopback(a)) if a == outside),
        "{started:?}"
    );
}
