//! TLS 1.3 between a server and a client whose keys stay in the key store (software keys and a
//! SoftHSM2 token), each pinning the other's exact certificate: the handshake works, and an
//! unpinned, expired or absent client certificate and an unpinned server are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/softhsm.rs"]
mod softhsm;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_hsm::cert::{CertificateAuthority, Profile, Subject, Validity};
use backbone_hsm::pkcs11::Pkcs11KeyStore;
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::tls::{self, PinSet};
use backbone_hsm::{KeyStore, KeyType, Signer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

struct Party {
    signer: Arc<dyn Signer>,
    certificate: Vec<u8>,
}

fn validity(serial: u8, not_after: SystemTime) -> Validity {
    Validity {
        not_before: SystemTime::now() - Duration::from_secs(3600),
        not_after,
        serial: vec![serial],
    }
}

fn issue(
    ca: &CertificateAuthority<'_>,
    signer: Arc<dyn Signer>,
    name: &str,
    serial: u8,
    not_after: SystemTime,
) -> Party {
    let subject = Subject {
        common_name: name.to_owned(),
        ..Subject::default()
    };
    let certificate = ca
        .issue(
            signer.public_key(),
            &subject,
            Profile::TlsAuth,
            &validity(serial, not_after),
        )
        .unwrap();
    Party {
        signer,
        certificate,
    }
}

fn software(store: &SoftwareKeyStore, label: &str, key_type: KeyType) -> Arc<dyn Signer> {
    store.generate(label, key_type).unwrap();
    store.signer(label, None).unwrap()
}

/// Runs one handshake and a one-line exchange; the server's result, then the client's.
async fn exchange(
    server: &Party,
    client: &Party,
    server_pins: PinSet,
    client_pins: PinSet,
) -> (Result<(), String>, Result<(), String>) {
    let server_config = tls::server_config(
        server.signer.clone(),
        vec![server.certificate.clone()],
        Arc::new(server_pins),
    )
    .unwrap();
    let client_config = tls::client_config(
        client.signer.clone(),
        vec![client.certificate.clone()],
        Arc::new(client_pins),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut line = [0u8; 5];
        stream
            .read_exact(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"pong\n")
            .await
            .map_err(|e| e.to_string())?;
        stream.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    });
    let client_result = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let connector = TlsConnector::from(Arc::new(client_config));
        let mut stream = connector
            .connect(ServerName::try_from("peer.invalid").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"ping\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        if reply != b"pong\n" {
            return Err(format!("unexpected reply {reply:?}"));
        }
        Ok(())
    }
    .await;
    (server_task.await.unwrap(), client_result)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn pinned_handshake_with_software_keys_of_each_tls_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let store = SoftwareKeyStore::open(dir.path()).unwrap();
    let ca_signer = software(&store, "ca", KeyType::EcP256);
    let ca = CertificateAuthority::self_signed(
        ca_signer.as_ref(),
        &Subject {
            common_name: "Test CA".into(),
            ..Subject::default()
        },
        &validity(1, SystemTime::now() + Duration::from_secs(86_400)),
    )
    .unwrap();
    let later = SystemTime::now() + Duration::from_secs(86_400);
    for (n, key_type) in [KeyType::EcP256, KeyType::Ed25519].into_iter().enumerate() {
        let server = issue(
            &ca,
            software(&store, &format!("server-{n}"), key_type),
            "server",
            10 + n as u8,
            later,
        );
        let client = issue(
            &ca,
            software(&store, &format!("client-{n}"), key_type),
            "client",
            20 + n as u8,
            later,
        );
        let (s, c) = runtime().block_on(exchange(
            &server,
            &client,
            PinSet::new([client.certificate.clone()]),
            PinSet::new([server.certificate.clone()]),
        ));
        assert_eq!((s, c), (Ok(()), Ok(())), "{key_type:?}");
    }
    // RSA keys sign TLS 1.3 handshakes with PSS; PKCS#1 v1.5 is refused when configuring.
    store.generate("rsa", KeyType::Rsa2048).unwrap();
    let pss = store
        .signer("rsa", Some(backbone_hsm::SignatureAlgorithm::RsaPssSha256))
        .unwrap();
    let server = issue(&ca, pss, "rsa-server", 30, later);
    let client = issue(
        &ca,
        software(&store, "client-rsa", KeyType::EcP256),
        "client",
        31,
        later,
    );
    let (s, c) = runtime().block_on(exchange(
        &server,
        &client,
        PinSet::new([client.certificate.clone()]),
        PinSet::new([server.certificate.clone()]),
    ));
    assert_eq!((s, c), (Ok(()), Ok(())), "RSA-PSS");
    let pkcs1 = store
        .signer(
            "rsa",
            Some(backbone_hsm::SignatureAlgorithm::RsaPkcs1Sha256),
        )
        .unwrap();
    assert!(matches!(
        tls::server_config(
            pkcs1,
            vec![server.certificate.clone()],
            Arc::new(PinSet::default())
        ),
        Err(tls::TlsError::UnsupportedAlgorithm(_))
    ));
}

#[test]
fn unpinned_expired_and_missing_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SoftwareKeyStore::open(dir.path()).unwrap();
    let ca_signer = software(&store, "ca", KeyType::EcP256);
    let ca = CertificateAuthority::self_signed(
        ca_signer.as_ref(),
        &Subject {
            common_name: "Test CA".into(),
            ..Subject::default()
        },
        &validity(1, SystemTime::now() + Duration::from_secs(86_400)),
    )
    .unwrap();
    let later = SystemTime::now() + Duration::from_secs(86_400);
    let server = issue(
        &ca,
        software(&store, "server", KeyType::EcP256),
        "server",
        2,
        later,
    );
    let client = issue(
        &ca,
        software(&store, "client", KeyType::EcP256),
        "client",
        3,
        later,
    );
    // Same key, same CA, but another certificate: not the registered one.
    let reissued = issue(&ca, client.signer.clone(), "client", 4, later);
    let expired = issue(
        &ca,
        client.signer.clone(),
        "client",
        5,
        SystemTime::now() - Duration::from_secs(60),
    );

    let (s, c) = runtime().block_on(exchange(
        &server,
        &reissued,
        PinSet::new([client.certificate.clone()]),
        PinSet::new([server.certificate.clone()]),
    ));
    assert!(
        s.as_ref()
            .is_err_and(|e| e.contains("ApplicationVerificationFailure")),
        "server: {s:?}"
    );
    assert!(c.is_err(), "client: {c:?}");

    let (s, _) = runtime().block_on(exchange(
        &server,
        &expired,
        PinSet::new([expired.certificate.clone()]),
        PinSet::new([server.certificate.clone()]),
    ));
    assert!(
        s.as_ref().is_err_and(|e| e.contains("Expired")),
        "server: {s:?}"
    );

    // The client does not pin this server.
    let (_, c) = runtime().block_on(exchange(
        &server,
        &client,
        PinSet::new([client.certificate.clone()]),
        PinSet::new([client.certificate.clone()]),
    ));
    assert!(
        c.as_ref()
            .is_err_and(|e| e.contains("ApplicationVerificationFailure")),
        "client: {c:?}"
    );

    // A client with no certificate at all.
    let server_config = tls::server_config(
        server.signer.clone(),
        vec![server.certificate.clone()],
        Arc::new(PinSet::new([client.certificate.clone()])),
    )
    .unwrap();
    let result = runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(server_config));
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor
                .accept(tcp)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        let anonymous = tokio_rustls::rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&tokio_rustls::rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tls::PinnedServerVerifier::new(
                Arc::new(PinSet::new([server.certificate.clone()])),
                &tls::provider(),
            )))
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        if let Ok(mut stream) = TlsConnector::from(Arc::new(anonymous))
            .connect(ServerName::try_from("peer.invalid").unwrap(), tcp)
            .await
        {
            let _ = stream.write_all(b"ping\n").await;
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
        }
        task.await.unwrap()
    });
    assert!(
        result
            .as_ref()
            .is_err_and(|e| e.contains("NoCertificatesPresented") || e.contains("certificate")),
        "server: {result:?}"
    );
}

#[test]
fn handshake_signed_by_softhsm2_keys() {
    let _module = softhsm::shared();
    let token = softhsm::token("tls");
    let store = Pkcs11KeyStore::open(&token.config, token.pin()).unwrap();
    store.generate("ca", KeyType::EcP256).unwrap();
    store.generate("server", KeyType::EcP256).unwrap();
    store.generate("client", KeyType::EcP256).unwrap();
    let ca_signer = store.signer("ca", None).unwrap();
    let ca = CertificateAuthority::self_signed(
        ca_signer.as_ref(),
        &Subject {
            common_name: "HSM CA".into(),
            ..Subject::default()
        },
        &validity(1, SystemTime::now() + Duration::from_secs(86_400)),
    )
    .unwrap();
    let later = SystemTime::now() + Duration::from_secs(86_400);
    let server = issue(
        &ca,
        store.signer("server", None).unwrap(),
        "server",
        2,
        later,
    );
    let client = issue(
        &ca,
        store.signer("client", None).unwrap(),
        "client",
        3,
        later,
    );
    let (s, c) = runtime().block_on(exchange(
        &server,
        &client,
        PinSet::new([client.certificate.clone()]),
        PinSet::new([server.certificate.clone()]),
    ));
    assert_eq!((s, c), (Ok(()), Ok(())));
}
