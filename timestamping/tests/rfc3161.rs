//! The RFC 3161 front end against a client nobody here wrote: `openssl ts -query` makes the
//! requests, the service (in-process on 127.0.0.1:0, software keys) answers over HTTP, and
//! `openssl ts -verify` checks the replies against the CA. Tampered replies are refused by
//! openssl; malformed requests get a rejection with the right failure bit and the service keeps
//! answering; each token's keyless signature is served by serial and covers the token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_hsm::cert::{Profile, Subject, pem};
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_timestamping::authority::{CalendarSigner, issue_certificate, issue_certificates};
use backbone_timestamping::calendar::rocks::RocksStore;
use backbone_timestamping::calendar::{Calendar, CalendarStore};
use backbone_timestamping::client::{self, ClientError};
use backbone_timestamping::cms::CmsSigner;
use backbone_timestamping::http::{self, PduAuth, TIMESTAMP_QUERY, TsaFront};
use backbone_timestamping::service::{self, Config, Running};
use backbone_timestamping::tsa::store::RocksTokenStore;
use backbone_timestamping::tsa::{self, Authority, Serials};
use backbone_timestamping_verify::imprint::HashAlgorithm;
use backbone_timestamping_verify::signature::Signature;
use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};
use yasna::models::ObjectIdentifier;

struct Fixture {
    addr: SocketAddr,
    running: Running,
    dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let keys = SoftwareKeyStore::open(dir.path().join("keys")).unwrap();
    keys.generate("ca", KeyType::EcP256).unwrap();
    keys.generate("timestamping", KeyType::EcP256).unwrap();
    let ca: Arc<dyn Signer> = keys.signer("ca", None).unwrap();
    let key: Arc<dyn Signer> = keys.signer("timestamping", None).unwrap();
    let not_before = SystemTime::now() - Duration::from_secs(3600);
    let (ca_der, calendar_der) =
        issue_certificates(ca.as_ref(), key.as_ref(), not_before, 365).unwrap();
    let subject = Subject {
        common_name: "Backbone TSA".into(),
        organization: Some("Backbone".into()),
        ..Subject::default()
    };
    let tsa_der = issue_certificate(
        ca.as_ref(),
        &ca_der,
        key.public_key(),
        &subject,
        Profile::TimeStamping,
        not_before,
        365,
        4,
    )
    .unwrap();
    std::fs::write(dir.path().join("ca.pem"), pem("CERTIFICATE", &ca_der)).unwrap();
    std::fs::write(dir.path().join("tsa.pem"), pem("CERTIFICATE", &tsa_der)).unwrap();

    let store: Box<dyn CalendarStore> =
        Box::new(RocksStore::open(dir.path().join("calendar")).unwrap());
    let calendar = Calendar::open(store).unwrap();
    let epoch = calendar.head().map_or(0, |h| h + 1).max(service::now());
    let running = service::spawn(
        calendar,
        CalendarSigner::new(Arc::clone(&key), &calendar_der).unwrap(),
        Config::default(),
    )
    .unwrap();
    let authority = Authority::new(
        CmsSigner::new(key, &tsa_der, Vec::new()).unwrap(),
        tsa::Config::default(),
        Serials::new(epoch),
    )
    .unwrap();
    let front = TsaFront {
        authority,
        store: Box::new(RocksTokenStore::open(dir.path().join("tsa")).unwrap()),
    };
    let app = http::router_with_tsa(
        running.handle.clone(),
        PduAuth {
            login_id: "anon".into(),
            key: b"k".to_vec(),
        },
        Some(Arc::new(front)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Fixture { addr, running, dir }
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "openssl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

async fn post(
    addr: SocketAddr,
    content_type: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, ClientError> {
    tokio::task::spawn_blocking(move || {
        client::call_with_type(addr, "POST", "/tsa", content_type, &body)
    })
    .await
    .unwrap()
}

async fn get(addr: SocketAddr, path: String) -> Result<Vec<u8>, ClientError> {
    tokio::task::spawn_blocking(move || client::call(addr, "GET", &path, &[]))
        .await
        .unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `(status, failure bit)` of a TimeStampResp.
fn status(reply: &[u8]) -> (u8, Option<usize>) {
    yasna::parse_der(reply, |r| {
        r.read_sequence(|r| {
            let status = r.next().read_sequence(|r| {
                let status = r.next().read_u8()?;
                r.read_optional(|r| r.read_sequence(|r| r.next().read_utf8string()))?;
                let bits = r.read_optional(|r| r.read_bitvec_bytes())?;
                Ok((
                    status,
                    bits.map(|(bytes, len)| {
                        assert_eq!(
                            bytes.iter().map(|b| b.count_ones()).sum::<u32>(),
                            1,
                            "one failure bit"
                        );
                        len - 1
                    }),
                ))
            })?;
            r.read_optional(|r| r.read_der())?;
            Ok(status)
        })
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_ts_round_trip_tampering_and_rejections() {
    let fixture = start().await;
    let (addr, dir) = (fixture.addr, fixture.dir.path().to_owned());
    write(
        &dir,
        "document.txt",
        b"e-prescription 2026-11-26 for patient 4711",
    );

    // A request with certReq: the token carries the TSA certificate; the CA alone verifies it.
    assert!(
        openssl(
            &dir,
            &[
                "ts",
                "-query",
                "-data",
                "document.txt",
                "-sha256",
                "-cert",
                "-out",
                "req.tsq"
            ]
        )
        .status
        .success()
    );
    let reply = post(
        addr,
        TIMESTAMP_QUERY,
        std::fs::read(dir.join("req.tsq")).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status(&reply), (0, None));
    write(&dir, "reply.tsr", &reply);
    let verify = [
        "ts",
        "-verify",
        "-in",
        "reply.tsr",
        "-queryfile",
        "req.tsq",
        "-CAfile",
        "ca.pem",
    ];
    assert!(
        openssl(&dir, &verify).status.success(),
        "openssl ts -verify refused the reply"
    );
    let text =
        String::from_utf8(openssl(&dir, &["ts", "-reply", "-in", "reply.tsr", "-text"]).stdout)
            .unwrap();
    // OpenSSL names 1.2.3.4.1 after its example configuration when it has one.
    assert!(
        text.contains("Policy OID: 1.2.3.4.1") || text.contains("Policy OID: tsa_policy1"),
        "{text}"
    );
    assert!(text.contains("Accuracy: 0x01 seconds"), "{text}");
    assert!(
        text.contains("TSA: DirName:/O=Backbone/CN=Backbone TSA"),
        "{text}"
    );

    // Without certReq, the verifier is given the TSA certificate.
    assert!(
        openssl(
            &dir,
            &[
                "ts",
                "-query",
                "-data",
                "document.txt",
                "-sha512",
                "-out",
                "bare.tsq"
            ]
        )
        .status
        .success()
    );
    let bare = post(
        addr,
        TIMESTAMP_QUERY,
        std::fs::read(dir.join("bare.tsq")).unwrap(),
    )
    .await
    .unwrap();
    write(&dir, "bare.tsr", &bare);
    assert!(
        openssl(
            &dir,
            &[
                "ts",
                "-verify",
                "-in",
                "bare.tsr",
                "-queryfile",
                "bare.tsq",
                "-CAfile",
                "ca.pem"
            ]
        )
        .status
        .code()
            != Some(0)
    );
    let with_tsa = [
        "ts",
        "-verify",
        "-in",
        "bare.tsr",
        "-queryfile",
        "bare.tsq",
        "-CAfile",
        "ca.pem",
        "-untrusted",
        "tsa.pem",
    ];
    assert!(openssl(&dir, &with_tsa).status.success());

    // Tampering: the signature's last byte, a digit of genTime, the echoed nonce.
    let token = tsa::token_of_reply(&reply).unwrap();
    let request = tsa::request::parse(
        &std::fs::read(dir.join("req.tsq")).unwrap(),
        &tsa::Config::default().policy,
    )
    .unwrap();
    let nonce = find(&reply, &request.nonce_der.unwrap()).expect("the nonce is echoed");
    // GeneralizedTime "YYYYMMDDHHMMSS[.f[f[f]]]Z": DER drops the fraction's trailing zeros, so 15 to
    // 19 bytes long, starting with the century.
    let gen_time = (15u8..=19)
        .find_map(|len| find(&reply, &[0x18, len, b'2', b'0']))
        .expect("genTime");
    for offset in [reply.len() - 1, gen_time + 2 + 4, nonce + 5] {
        let mut tampered = reply.clone();
        tampered[offset] ^= 0x01;
        write(&dir, "tampered.tsr", &tampered);
        let refused = openssl(
            &dir,
            &[
                "ts",
                "-verify",
                "-in",
                "tampered.tsr",
                "-queryfile",
                "req.tsq",
                "-CAfile",
                "ca.pem",
            ],
        );
        assert!(
            !refused.status.success(),
            "openssl accepted a reply with byte {offset} flipped"
        );
    }
    // A reply to another request does not verify against this one.
    assert!(
        !openssl(
            &dir,
            &[
                "ts",
                "-verify",
                "-in",
                "bare.tsr",
                "-queryfile",
                "req.tsq",
                "-CAfile",
                "ca.pem",
                "-untrusted",
                "tsa.pem"
            ]
        )
        .status
        .success()
    );

    // Rejections, each with its failure bit; the service answers every one.
    assert!(
        openssl(
            &dir,
            &[
                "ts",
                "-query",
                "-data",
                "document.txt",
                "-sha1",
                "-out",
                "sha1.tsq"
            ]
        )
        .status
        .success()
    );
    let mut version_two = std::fs::read(dir.join("req.tsq")).unwrap();
    assert_eq!(&version_two[2..5], &[0x02, 0x01, 0x01]);
    version_two[4] = 2;
    let with_extension = request_with_extension();
    let other_policy = request_with_policy(&[1, 2, 3, 4, 2]);
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        ("sha-1", std::fs::read(dir.join("sha1.tsq")).unwrap(), 0),
        ("version 2", version_two, 2),
        ("garbage", b"this is not DER".to_vec(), 5),
        ("empty", Vec::new(), 5),
        (
            "truncated",
            std::fs::read(dir.join("req.tsq")).unwrap()[..20].to_vec(),
            5,
        ),
        ("oversized", vec![0x30; 5000], 5),
        ("another policy", other_policy, 15),
        ("extension", with_extension, 16),
    ];
    for (what, body, bit) in cases {
        let reply = post(addr, TIMESTAMP_QUERY, body).await.unwrap();
        assert_eq!(status(&reply), (2, Some(bit)), "{what}");
        write(&dir, "rejected.tsr", &reply);
        let text = String::from_utf8(
            openssl(&dir, &["ts", "-reply", "-in", "rejected.tsr", "-text"]).stdout,
        )
        .unwrap();
        assert!(text.contains("Status: Rejected"), "{what}: {text}");
    }
    // Another media type is refused before parsing.
    let wrong_type = post(
        addr,
        "application/json",
        std::fs::read(dir.join("req.tsq")).unwrap(),
    )
    .await;
    assert!(
        matches!(wrong_type, Err(ClientError::Status { status: 415, .. })),
        "{wrong_type:?}"
    );

    // Still serving: a fresh request is granted and verifies.
    let again = post(
        addr,
        TIMESTAMP_QUERY,
        std::fs::read(dir.join("req.tsq")).unwrap(),
    )
    .await
    .unwrap();
    write(&dir, "again.tsr", &again);
    assert!(
        openssl(
            &dir,
            &[
                "ts",
                "-verify",
                "-in",
                "again.tsr",
                "-queryfile",
                "req.tsq",
                "-CAfile",
                "ca.pem"
            ]
        )
        .status
        .success()
    );
    let serials = [
        tsa::serial_of_token(&token).unwrap(),
        tsa::serial_of_token(&tsa::token_of_reply(&again).unwrap()).unwrap(),
    ];
    assert_ne!(serials[0], serials[1]);

    // The token's keyless signature, served by serial, covers SHA-256 of the token.
    let ksig = get(addr, format!("/tsa/{}.ksig", serials[0]))
        .await
        .unwrap();
    let signature = Signature::decode(&ksig).unwrap();
    let token_hash = HashAlgorithm::Sha256.hash(&[&token]).unwrap();
    let context = Context {
        document_hash: Some(&token_hash),
        ..Context::default()
    };
    let verdict = verify::verify(&signature, Policy::Internal, &context);
    assert_eq!(verdict.outcome, Outcome::Ok, "{verdict}");
    assert!(matches!(
        get(addr, "/tsa/1234.ksig".into()).await,
        Err(ClientError::Status { status: 404, .. })
    ));
    assert!(matches!(
        get(addr, "/tsa/zz.ksig".into()).await,
        Err(ClientError::Status { status: 404, .. })
    ));
    let served = get(addr, "/tsa/certificate.pem".into()).await.unwrap();
    assert_eq!(served, std::fs::read(dir.join("tsa.pem")).unwrap());
    fixture.running.shutdown().await;
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn imprint(w: &mut yasna::DERWriterSeq<'_>) {
    w.next().write_u8(1);
    w.next().write_sequence(|w| {
        w.next().write_sequence(|w| {
            w.next().write_oid(&ObjectIdentifier::from_slice(&[
                2, 16, 840, 1, 101, 3, 4, 2, 1,
            ]))
        });
        w.next().write_bytes(&[1; 32]);
    });
}

fn request_with_extension() -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            imprint(w);
            w.next().write_tagged_implicit(yasna::Tag::context(0), |w| {
                w.write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next()
                            .write_oid(&ObjectIdentifier::from_slice(&[1, 2, 3, 9]));
                        w.next().write_bytes(b"x");
                    });
                });
            });
        });
    })
}

fn request_with_policy(policy: &[u64]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            imprint(w);
            w.next().write_oid(&ObjectIdentifier::from_slice(policy));
        });
    })
}
