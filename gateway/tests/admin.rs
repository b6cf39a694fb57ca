//! The gateway's HTTPS admin API: an administrator grants and revokes access rights and
//! registers and removes information systems' certificates, each taking effect at once; anyone else is refused at the handshake; bad grants get their error code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_gateway::access::{Grant, Grantee};
use backbone_gateway::admin::client::{AdminClient, ClientError};
use backbone_gateway::admin::{AdminServer, Admins};
use backbone_gateway::systems::Connection;
use backbone_hsm::cert::{CertificateAuthority, Subject, Validity};
use backbone_hsm::{KeyType, Signer};
use common::{Backbone, DISPENSING, PING};

fn self_signed(key: &dyn Signer, name: &str, serial: u8) -> Vec<u8> {
    let now = SystemTime::now();
    let validity = Validity {
        not_before: now - Duration::from_secs(60),
        not_after: now + Duration::from_secs(3600),
        serial: vec![serial],
    };
    let subject = Subject {
        common_name: name.into(),
        ..Subject::default()
    };
    CertificateAuthority::self_signed(key, &subject, &validity)
        .unwrap()
        .certificate_der()
        .to_vec()
}

async fn ping(backbone: &Backbone) -> String {
    let answer = backbone
        .pharmacy_client()
        .get(format!("/r1/{PING}"))
        .header("X-Road-Client", DISPENSING)
        .send()
        .await
        .unwrap();
    if answer.status.is_success() {
        "ok".into()
    } else {
        answer.fault_type().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_administrator_grants_and_revokes_and_strangers_are_refused() {
    let mut backbone = Backbone::start(Duration::from_secs(600)).await;
    backbone.start_gateways().await;
    let hospital = &backbone.hospital;
    let conf = hospital.conf.current(SystemTime::now()).unwrap();
    let own_cert = conf
        .gateways
        .iter()
        .find(|g| g.id.to_string() == hospital.gateway_id)
        .unwrap()
        .tls_certificate
        .clone()
        .unwrap()
        .der()
        .to_vec();

    // Mari is an administrator: her certificate is in the admins directory.
    hospital
        .keys
        .generate("admin-mari", KeyType::EcP256)
        .unwrap();
    let mari_key = hospital.keys.signer("admin-mari", None).unwrap();
    let mari_cert = self_signed(mari_key.as_ref(), "mari", 1);
    let admins = hospital.dir.join("admins");
    std::fs::create_dir_all(&admins).unwrap();
    std::fs::write(
        admins.join("mari.pem"),
        backbone_hsm::cert::pem("CERTIFICATE", &mari_cert),
    )
    .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = hospital.gateway.as_ref().unwrap();
    let server = AdminServer::spawn(
        listener,
        Arc::clone(&hospital.tls),
        own_cert.clone(),
        Admins::new(&admins),
        gateway,
        Arc::clone(&hospital.log),
        Arc::clone(&hospital.conf),
    )
    .unwrap();
    let mari = AdminClient::new(
        server.local_addr(),
        Arc::clone(&mari_key),
        mari_cert.clone(),
        own_cert.clone(),
    )
    .unwrap();

    assert_eq!(ping(&backbone).await, "Server.ServerProxy.AccessDenied");
    let grant = Grant::new(
        PING.parse().unwrap(),
        Grantee::Client(DISPENSING.parse().unwrap()),
        "GET",
        "/**",
    )
    .unwrap();
    assert!(mari.grant(&grant).await.unwrap());
    assert!(
        !mari.grant(&grant).await.unwrap(),
        "granting twice changes nothing"
    );
    assert_eq!(
        ping(&backbone).await,
        "ok",
        "the grant takes effect at once"
    );
    assert_eq!(mari.rights().await.unwrap(), vec![grant.clone()]);
    let status = mari.status().await.unwrap();
    assert!(status.conf_current && status.accepting);
    assert_eq!(status.log_records, 2);
    assert!(mari.revoke(&grant).await.unwrap());
    assert_eq!(ping(&backbone).await, "Server.ServerProxy.AccessDenied");

    // A bad pattern is refused with its code.
    let bad = Grant {
        path: "/../secrets".into(),
        ..grant.clone()
    };
    match mari.grant(&bad).await {
        Err(ClientError::Refused { status: 400, error }) => assert_eq!(error.code, "bad_request"),
        other => panic!("{other:?}"),
    }

    // Information systems: the hospital's EHR system is listed with its certificate; removed,
    // it is refused at once; https-no-auth lets it in without one; registered again, in again.
    let ehr = backbone.hospital.system.clone();
    let listed = mari.clients().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].client.as_str(), listed[0].connection),
        (ehr.as_str(), Connection::Https)
    );
    let fingerprint = listed[0].certificates[0].sha256.clone();
    let ehr_ping = async || {
        let answer = backbone
            .hospital_client()
            .get(format!("/r1/{PING}"))
            .header("X-Road-Client", ehr.as_str())
            .send()
            .await
            .unwrap();
        answer.fault_type().unwrap_or("ok").to_owned()
    };
    assert_eq!(ehr_ping().await, "Server.ServerProxy.AccessDenied");
    assert!(
        mari.remove_client_certificate(&ehr, &fingerprint)
            .await
            .unwrap()
    );
    assert_eq!(ehr_ping().await, "Client.SslAuthenticationFailed");
    assert!(
        mari.set_connection(&ehr, Connection::HttpsNoAuth)
            .await
            .unwrap()
    );
    assert_eq!(ehr_ping().await, "Server.ServerProxy.AccessDenied");
    assert!(mari.set_connection(&ehr, Connection::Https).await.unwrap());
    assert_eq!(ehr_ping().await, "Client.SslAuthenticationFailed");
    assert!(
        mari.add_client_certificate(&ehr, &backbone.hospital.system_cert)
            .await
            .unwrap()
    );
    assert_eq!(ehr_ping().await, "Server.ServerProxy.AccessDenied");
    match mari
        .add_client_certificate(&ehr, b"not a certificate")
        .await
    {
        Err(ClientError::Refused { status: 400, error }) => assert_eq!(error.code, "bad_request"),
        other => panic!("{other:?}"),
    }

    // A stranger with their own self-signed certificate, and Mari's certificate without her key.
    backbone
        .pharmacy
        .keys
        .generate("stranger", KeyType::EcP256)
        .unwrap();
    let stranger_key = backbone.pharmacy.keys.signer("stranger", None).unwrap();
    let stranger = AdminClient::new(
        server.local_addr(),
        Arc::clone(&stranger_key),
        self_signed(stranger_key.as_ref(), "mallory", 2),
        own_cert.clone(),
    )
    .unwrap();
    assert!(matches!(
        stranger.rights().await,
        Err(ClientError::Failed(_))
    ));
    let impostor = AdminClient::new(
        server.local_addr(),
        stranger_key,
        mari_cert.clone(),
        own_cert.clone(),
    )
    .unwrap();
    assert!(matches!(
        impostor.rights().await,
        Err(ClientError::Failed(_))
    ));

    // Removing Mari's file locks her out from her next connection.
    std::fs::remove_file(admins.join("mari.pem")).unwrap();
    assert!(matches!(mari.rights().await, Err(ClientError::Failed(_))));
    server.shutdown().await;
}
