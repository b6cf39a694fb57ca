//! The gateway's two ports under abuse, over real sockets: a slow-loris information system, a
//! stalled TLS handshake on either port, oversized bodies on both, and connection floods — each
//! bounded by `backbone_server`'s accept loop or the gateway's own body limit, while legitimate
//! exchanges keep being served.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use backbone_gateway::connect::GatewayClient;
use backbone_server::{Limits, probe};
use common::{Backbone, DISPENSING, PING};

fn limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(3),
        head_timeout: Duration::from_secs(2),
        max_connections: 8,
        ..Limits::default()
    }
}

async fn backbone() -> Backbone {
    let mut backbone = Backbone::start(Duration::from_secs(600)).await;
    backbone
        .start_gateways_tuned(|agency, config| {
            config.limits = limits();
            // Plain HTTP for information systems allowed it, so that a slow loris can try it.
            config.client_plain_listen = Some("127.0.0.1:0".parse().unwrap());
            // The provider takes less than the client sends, so that its own limit is tried.
            config.max_body = if agency == "hospital" {
                1024
            } else {
                64 * 1024
            };
        })
        .await;
    backbone.grant(PING, DISPENSING, "*", "/**");
    backbone
}

/// One exchange through the pharmacy's gateway to the hospital's: status and error type.
async fn ping(client: &GatewayClient, body: usize) -> (u16, String) {
    let (status, kind, _) = common::ping(client, body).await;
    (status, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_port_drops_slow_loris_refuses_large_bodies_and_makes_floods_wait() {
    let backbone = backbone().await;
    let gateway = backbone.pharmacy.gateway.as_ref().unwrap();
    let addr = gateway.client_addr();
    // HTTPS: a handshake that stalls is dropped; plain HTTP: a request head that trickles in.
    probe::check_handshake(addr, &limits()).await.unwrap();
    probe::check_slow_loris(gateway.client_plain_addr().unwrap(), "/live", &limits())
        .await
        .unwrap();
    let client = &backbone.pharmacy_client();
    // Over the pharmacy's limit (64 KiB): the protocol's own fault, before the body is read, and
    // read anyway so that the client, still writing it, gets the answer.
    assert_eq!(
        ping(client, 64 * 1024 + 1).await,
        (413, "Client.RequestTooLarge".to_owned())
    );
    assert_eq!(
        ping(client, 1 << 20).await,
        (413, "Client.RequestTooLarge".to_owned())
    );
    let waiting = client.clone();
    probe::check_flood(addr, &limits(), || async move {
        ping(&waiting, 10).await == (200, String::new())
    })
    .await
    .unwrap();
    assert_eq!(
        ping(client, 10).await,
        (200, String::new()),
        "the gateway still serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_peer_port_makes_floods_wait_drops_stalled_handshakes_and_refuses_large_bodies() {
    let backbone = backbone().await;
    let client = &backbone.pharmacy_client();
    let peer = backbone.hospital.gateway.as_ref().unwrap().peer_addr();
    // Before any exchange, every slot of the hospital's peer port held: the pharmacy's first
    // connection waits, and its exchange completes once the slots are released.
    let waiting = client.clone();
    probe::check_flood(peer, &limits(), || async move {
        ping(&waiting, 10).await == (200, String::new())
    })
    .await
    .unwrap();
    probe::check_handshake(peer, &limits()).await.unwrap();
    // Within the pharmacy's limit, over the hospital's: refused by the provider's gateway.
    assert_eq!(
        ping(client, 4096).await,
        (413, "Server.ServerProxy.RequestTooLarge".to_owned())
    );
    assert_eq!(
        ping(client, 10).await,
        (200, String::new()),
        "the gateway still serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn made_up_services_share_one_metric_label() {
    let backbone = backbone().await;
    let client = &backbone.pharmacy_client();
    for n in 0..50 {
        let answer = client
            .get(format!("/r1/EE/GOV/70000001/ehr/made-up-{n}"))
            .header("X-Road-Client", DISPENSING)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.fault_type(), Some("Client.UnknownService"));
    }
    assert_eq!(ping(client, 10).await, (200, String::new()));
    let metrics = client.get("/metrics").send().await.unwrap().text();
    assert!(
        !metrics.contains("made-up"),
        "a caller's made-up service became a label"
    );
    let unknown = metrics
        .lines()
        .find(|l| {
            l.starts_with("backbone_gateway_exchanges_total")
                && l.contains("service=\"unknown\"")
                && l.contains("Client.UnknownService")
        })
        .unwrap_or_else(|| panic!("no unknown label: {metrics}"));
    assert!(unknown.ends_with(" 50"), "{unknown}");
    assert!(
        metrics
            .lines()
            .any(|l| l.contains(&format!("service=\"{PING}\"")) && l.contains("outcome=\"ok\"")),
        "{metrics}"
    );
}
