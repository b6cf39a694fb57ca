//! The publications file the running service keeps: served at GET /publications.bin and written
//! to the data directory at each publication; accepted by the verify crate's parser and by the
//! `openssl cms` command with the CA as the only trust anchor; a flipped byte is refused by both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_hsm::cert::{Profile, Subject, pem};
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_timestamping::authority::{CalendarSigner, issue_certificate, issue_certificates};
use backbone_timestamping::calendar::rocks::RocksStore;
use backbone_timestamping::calendar::{Calendar, CalendarStore};
use backbone_timestamping::client;
use backbone_timestamping::cms::CmsSigner;
use backbone_timestamping::http::{self, PduAuth};
use backbone_timestamping::publications_file::{FILE_NAME, PublicationsFileSigner};
use backbone_timestamping::service::{self, Config};
use backbone_timestamping_verify::publications_file::{PublicationsFile, TrustAnchors};

const EMAIL: &str = "publications@backbone.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_and_written_file_verifies_with_the_parser_and_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let keys = SoftwareKeyStore::open(dir.path().join("keys")).unwrap();
    for label in ["ca", "calendar", "publications"] {
        keys.generate(label, KeyType::EcP256).unwrap();
    }
    let signer = |label: &str| -> Arc<dyn Signer> { keys.signer(label, None).unwrap() };
    let not_before = SystemTime::now() - Duration::from_secs(3600);
    let (ca_der, calendar_der) = issue_certificates(
        signer("ca").as_ref(),
        signer("calendar").as_ref(),
        not_before,
        365,
    )
    .unwrap();
    let subject = Subject {
        common_name: "Backbone publications".into(),
        email: Some(EMAIL.into()),
        ..Subject::default()
    };
    let publications_der = issue_certificate(
        signer("ca").as_ref(),
        &ca_der,
        signer("publications").public_key(),
        &subject,
        Profile::MemberSigning,
        not_before,
        365,
        3,
    )
    .unwrap();
    let path = dir.path().join(FILE_NAME);
    let file_signer = PublicationsFileSigner::new(
        CmsSigner::new(signer("publications"), &publications_der, Vec::new()).unwrap(),
        Some(path.clone()),
        None,
    );
    let store: Box<dyn CalendarStore> =
        Box::new(RocksStore::open(dir.path().join("calendar")).unwrap());
    let config = Config {
        publication_interval: 2,
        ..Config::default()
    };
    let calendar_signer = CalendarSigner::new(signer("calendar"), &calendar_der).unwrap();
    let running = service::spawn_publishing(
        Calendar::open(store).unwrap(),
        calendar_signer,
        config,
        file_signer,
    )
    .unwrap();
    let app = http::router(
        running.handle.clone(),
        PduAuth {
            login_id: "anon".into(),
            key: b"k".to_vec(),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The file exists from the start (no publication yet), then gains publications.
    assert!(path.exists());
    let imprint = backbone_timestamping_verify::imprint::HashAlgorithm::Sha256
        .hash(&[b"x"])
        .unwrap();
    let bytes = imprint.as_bytes().to_vec();
    tokio::task::spawn_blocking(move || client::sign(addr, &bytes, 0))
        .await
        .unwrap()
        .unwrap();
    let served = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let served = fetch(addr).await;
            if !PublicationsFile::parse_unverified(&served)
                .unwrap()
                .publications
                .is_empty()
            {
                return served;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap();
    running.shutdown().await;
    // The file on disk is the one served (no publication can come after the shutdown).
    assert_eq!(std::fs::read(&path).unwrap(), served);

    let ca_pem = pem("CERTIFICATE", &ca_der);
    let anchors = TrustAnchors::from_pem(ca_pem.as_bytes())
        .unwrap()
        .with_signer_email(EMAIL);
    let now = i64::try_from(service::now()).unwrap();
    let parsed = PublicationsFile::parse_unverified(&served).unwrap();
    assert_eq!(parsed.certificates.len(), 1);
    assert_eq!(parsed.certificates[0].certificate, calendar_der);
    assert!(
        parsed
            .publications
            .iter()
            .all(|p| p.publication.time % 2 == 0)
    );
    parsed.verify(&anchors, now).unwrap();

    // The openssl command, given only the CA: the signature is over every byte before the
    // signature element (its TLV16 header is four bytes; the value is the DER PKCS#7).
    let (body, signature) = split(&served);
    let ca_path = write(dir.path(), "ca.pem", ca_pem.as_bytes());
    assert!(
        openssl_verify(dir.path(), &ca_path, &body, &signature),
        "openssl cms -verify refused the file"
    );
    let mut flipped = body.clone();
    flipped[30] ^= 0x01;
    assert!(
        !openssl_verify(dir.path(), &ca_path, &flipped, &signature),
        "openssl accepted a flipped byte"
    );
    let mut tampered = served.clone();
    tampered[30] ^= 0x01;
    let refused = PublicationsFile::parse_unverified(&tampered).map(|f| f.verify(&anchors, now));
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "the parser accepted a flipped byte"
    );
}

async fn fetch(addr: SocketAddr) -> Vec<u8> {
    tokio::task::spawn_blocking(move || client::call(addr, "GET", "/publications.bin", &[]))
        .await
        .unwrap()
        .unwrap()
}

/// The signed body and the PKCS#7 DER of a file whose last element is the 0x704 signature.
fn split(file: &[u8]) -> (Vec<u8>, Vec<u8>) {
    // Walk the TLVs after the magic to find where the signature element starts.
    let mut offset = 8;
    loop {
        let (element, _) = backbone_timestamping_verify::tlv::read(&file[offset..]).unwrap();
        if element.tag() == 0x704 {
            return (file[..offset].to_vec(), element.value().to_vec());
        }
        offset += element.raw().len();
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn openssl_verify(dir: &Path, ca: &Path, body: &[u8], signature: &[u8]) -> bool {
    let content = write(dir, "body.bin", body);
    let signature = write(dir, "signature.p7s", signature);
    let output = Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-out",
            "/dev/null",
        ])
        .arg("-in")
        .arg(&signature)
        .arg("-content")
        .arg(&content)
        .arg("-CAfile")
        .arg(ca)
        .output()
        .unwrap();
    eprintln!(
        "openssl cms -verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.status.success()
}
