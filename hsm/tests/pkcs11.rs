//! The PKCS#11 key store against SoftHSM2: every algorithm, concurrency, the distinct errors, key
//! attributes, and recovery from lost sessions.
// clippy.toml lets `#[test]` functions unwrap; the helpers below are test code too.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "common/softhsm.rs"]
mod softhsm;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use backbone_hsm::config::Pkcs11Config;
use backbone_hsm::pkcs11::Pkcs11KeyStore;
use backbone_hsm::{Error, KeyStore, KeyType, Metrics, Pin, SignatureAlgorithm, Signer};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use softhsm::{MODULE, TestToken};

fn open(token: &TestToken) -> Pkcs11KeyStore {
    Pkcs11KeyStore::open(&token.config, token.pin()).unwrap()
}

/// A session on the token through a context of our own (the same library, so the same state).
fn raw_session(label: &str) -> Session {
    let context = Pkcs11::new(MODULE).unwrap();
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| context.get_token_info(*slot).unwrap().label() == label)
        .unwrap();
    context.open_rw_session(slot).unwrap()
}

fn reconnects(metrics: &Metrics, token: &str) -> u64 {
    metrics.reconnects.with_label_values(&[token]).get()
}

#[test]
fn every_algorithm_signs_and_verifies() {
    let _module = softhsm::shared();
    let token = softhsm::token("algorithms");
    let store = open(&token);
    for key_type in KeyType::ALL {
        let label = key_type.name();
        let public = store.generate(label, key_type).unwrap();
        assert_eq!(public.key_type(), key_type);
        assert_eq!(store.public_key(label).unwrap(), public);
        for algorithm in SignatureAlgorithm::ALL
            .into_iter()
            .filter(|a| key_type.supports(*a))
        {
            let signer = store.signer(label, Some(algorithm)).unwrap();
            assert_eq!((signer.label(), signer.algorithm()), (label, algorithm));
            assert_eq!(signer.public_key(), &public);
            for message in [&b""[..], b"referral 42", &[7; 10_000]] {
                let signature = signer.sign(message).unwrap();
                public.verify(algorithm, message, &signature).unwrap();
            }
            let signature = signer.sign(b"referral 42").unwrap();
            assert!(
                public
                    .verify(algorithm, b"referral 43", &signature)
                    .is_err(),
                "{algorithm}"
            );
        }
    }
    let labels: Vec<_> = store.keys().unwrap().into_iter().map(|k| k.label).collect();
    assert_eq!(labels, ["ec-p256", "ed25519", "rsa2048", "rsa3072"]);
    assert_eq!(store.describe(), format!("PKCS#11 token '{}'", token.label));
    assert!(matches!(
        store.signer("ed25519", Some(SignatureAlgorithm::RsaPssSha256)),
        Err(Error::AlgorithmMismatch { .. })
    ));
}

#[test]
fn many_threads_sign_at_once() {
    let _module = softhsm::shared();
    let token = softhsm::token("threads");
    let store = open(&token);
    let public = store.generate("k", KeyType::EcP256).unwrap();
    let signer = store.signer("k", None).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let signer = Arc::clone(&signer);
            let public = public.clone();
            thread::spawn(move || {
                for i in 0..200 {
                    let message = format!("thread {t} message {i}");
                    let signature = signer.sign(message.as_bytes()).unwrap();
                    public
                        .verify(
                            SignatureAlgorithm::EcdsaP256Sha256,
                            message.as_bytes(),
                            &signature,
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn wrong_pin_is_refused() {
    let _module = softhsm::shared();
    let token = softhsm::token("wrong-pin");
    let err = Pkcs11KeyStore::open(&token.config, Pin::new("not the pin")).unwrap_err();
    assert!(
        matches!(&err, Error::WrongPin { token: t } if *t == token.label),
        "{err}"
    );
    assert!(!err.to_string().contains("not the pin"));
    // The right PIN still works afterwards.
    open(&token);
}

#[test]
fn missing_token_lists_the_tokens_present() {
    let _module = softhsm::shared();
    let token = softhsm::token("present");
    let config = Pkcs11Config {
        token_label: "no-such-token".to_owned(),
        ..token.config.clone()
    };
    let err = Pkcs11KeyStore::open(&config, token.pin()).unwrap_err();
    let Error::NoSuchToken { label, present, .. } = &err else {
        panic!("expected NoSuchToken, got {err}")
    };
    assert_eq!(label, "no-such-token");
    assert!(present.contains(&token.label), "{present:?}");

    let config = Pkcs11Config {
        module: PathBuf::from("/nonexistent/libpkcs11.so"),
        ..token.config.clone()
    };
    assert!(matches!(
        Pkcs11KeyStore::open(&config, token.pin()),
        Err(Error::Module { .. })
    ));
}

#[test]
fn missing_keys_and_taken_labels() {
    let _module = softhsm::shared();
    let token = softhsm::token("missing");
    let store = open(&token);
    let err = store.signer("nope", None).unwrap_err();
    assert!(
        matches!(&err, Error::NoSuchKey { label, kind: "public", .. } if label == "nope"),
        "{err}"
    );
    assert!(err.to_string().contains(&token.label), "{err}");
    assert!(matches!(
        store.public_key("nope"),
        Err(Error::NoSuchKey { .. })
    ));

    store.generate("k", KeyType::Ed25519).unwrap();
    let err = store.generate("k", KeyType::EcP256).unwrap_err();
    assert!(
        matches!(&err, Error::KeyExists { label, .. } if label == "k"),
        "{err}"
    );

    // A public half without its private half: the signer reports the private key missing.
    store.generate("half", KeyType::EcP256).unwrap();
    let session = raw_session(&token.label);
    login(&session);
    let private = find(&session, "half", ObjectClass::PRIVATE_KEY);
    session.destroy_object(private).unwrap();
    let err = store.signer("half", None).unwrap_err();
    assert!(
        matches!(&err, Error::NoSuchKey { label, kind: "private", .. } if label == "half"),
        "{err}"
    );
}

#[test]
fn private_keys_are_sensitive_and_not_extractable() {
    let _module = softhsm::shared();
    let token = softhsm::token("attributes");
    let store = open(&token);
    let session = raw_session(&token.label);
    login(&session);
    for key_type in [KeyType::EcP256, KeyType::Ed25519, KeyType::Rsa2048] {
        store.generate(key_type.name(), key_type).unwrap();
        let private = find(&session, key_type.name(), ObjectClass::PRIVATE_KEY);
        let public = find(&session, key_type.name(), ObjectClass::PUBLIC_KEY);
        let attributes = session
            .get_attributes(
                private,
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Sign,
                    AttributeType::Id,
                ],
            )
            .unwrap();
        let mut id = None;
        for attribute in &attributes {
            match attribute {
                Attribute::Token(v)
                | Attribute::Private(v)
                | Attribute::Sensitive(v)
                | Attribute::Sign(v) => {
                    assert!(*v, "{key_type}: {attribute:?}")
                }
                Attribute::AlwaysSensitive(v) | Attribute::NeverExtractable(v) => {
                    assert!(*v, "{key_type}: {attribute:?}")
                }
                Attribute::Extractable(v) => assert!(!*v, "{key_type}: {attribute:?}"),
                Attribute::Id(v) => id = Some(v.clone()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(attributes.len(), 8, "{key_type}: {attributes:?}");
        // Both halves share one CKA_ID.
        let public_id = session
            .get_attributes(public, &[AttributeType::Id])
            .unwrap();
        assert_eq!(public_id, [Attribute::Id(id.unwrap())], "{key_type}");
        // The secret itself cannot be read.
        let secret = if key_type.rsa_bits().is_some() {
            AttributeType::PrivateExponent
        } else {
            AttributeType::Value
        };
        match session.get_attributes(private, &[secret]) {
            Ok(values) => assert!(values.is_empty(), "{key_type}: {values:?}"),
            Err(e) => assert!(
                matches!(e, CkError::Pkcs11(RvError::AttributeSensitive, _)),
                "{key_type}: {e}"
            ),
        }
    }
}

/// The signer signs with a session copy of its key: the copy is as sensitive as the token
/// object, is not listed or found as a key of its own, and goes with the signer.
#[test]
fn signs_with_a_session_copy_of_the_key_and_destroys_it_with_the_signer() {
    let _module = softhsm::shared();
    let token = softhsm::token("session-copy");
    let store = open(&token);
    let public = store.generate("k", KeyType::EcP256).unwrap();
    let session = raw_session(&token.label);
    login(&session);
    let copies = || {
        let template = [
            Attribute::Token(false),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"k".to_vec()),
        ];
        session.find_objects(&template).unwrap()
    };
    assert!(copies().is_empty());

    let signer = store.signer("k", None).unwrap();
    for message in [&b"referral 42"[..], b"referral 43"] {
        let signature = signer.sign(message).unwrap();
        public
            .verify(SignatureAlgorithm::EcdsaP256Sha256, message, &signature)
            .unwrap();
    }
    let [copy] = copies()[..] else {
        panic!("one session copy expected, found {:?}", copies())
    };
    let attributes = session
        .get_attributes(
            copy,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Private,
            ],
        )
        .unwrap();
    assert_eq!(
        attributes,
        [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Private(true)
        ]
    );
    match session.get_attributes(copy, &[AttributeType::Value]) {
        Ok(values) => assert!(values.is_empty(), "{values:?}"),
        Err(e) => assert!(
            matches!(e, CkError::Pkcs11(RvError::AttributeSensitive, _)),
            "{e}"
        ),
    }
    // The copy is neither listed nor taken for the key: one key, and its label still taken.
    let labels: Vec<_> = store.keys().unwrap().into_iter().map(|k| k.label).collect();
    assert_eq!(labels, ["k"]);
    assert!(matches!(
        store.generate("k", KeyType::EcP256),
        Err(Error::KeyExists { .. })
    ));
    // A second signer of the same key keeps a copy of its own.
    let second = store.signer("k", None).unwrap();
    second.sign(b"x").unwrap();
    assert_eq!(copies().len(), 2);

    drop(signer);
    drop(second);
    assert!(copies().is_empty(), "{:?}", copies());
    // The token object is untouched: a new signer signs.
    let signature = store.signer("k", None).unwrap().sign(b"after").unwrap();
    public
        .verify(SignatureAlgorithm::EcdsaP256Sha256, b"after", &signature)
        .unwrap();
}

/// A key the token will not copy (`CKA_COPYABLE` false) is signed with through the token object.
#[test]
fn a_key_that_cannot_be_copied_signs_through_the_token_object() {
    let _module = softhsm::shared();
    let token = softhsm::token("no-copy");
    let store = open(&token);
    let session = raw_session(&token.label);
    login(&session);
    let label = b"fixed".to_vec();
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let public = [
        Attribute::Token(true),
        Attribute::Label(label.clone()),
        Attribute::EcParams(p256),
        Attribute::Verify(true),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Label(label.clone()),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
        Attribute::Copyable(false),
    ];
    session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .unwrap();

    let signer = store.signer("fixed", None).unwrap();
    let signature = signer.sign(b"referral 42").unwrap();
    signer
        .public_key()
        .verify(
            SignatureAlgorithm::EcdsaP256Sha256,
            b"referral 42",
            &signature,
        )
        .unwrap();
    let copies = session
        .find_objects(&[
            Attribute::Token(false),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label),
        ])
        .unwrap();
    assert!(copies.is_empty(), "{copies:?}");
    drop(signer);
    // Dropping the signer leaves the token object alone.
    store.signer("fixed", None).unwrap().sign(b"again").unwrap();
}

#[test]
fn two_stores_on_one_token_share_the_module_and_login() {
    let _module = softhsm::shared();
    let token = softhsm::token("two-stores");
    let first = open(&token);
    let second = open(&token);
    let public = first.generate("k", KeyType::EcP256).unwrap();
    let signature = second.signer("k", None).unwrap().sign(b"x").unwrap();
    public
        .verify(SignatureAlgorithm::EcdsaP256Sha256, b"x", &signature)
        .unwrap();
    drop(first);
    // Closing one store's sessions does not log the other out.
    second.signer("k", None).unwrap().sign(b"y").unwrap();
}

/// Threads sign in a loop while another logs the token out through its own session, so that
/// signing fails with CKR_USER_NOT_LOGGED_IN; every signature must still come and verify.
#[test]
fn recovers_when_logged_out_while_signing() {
    let _module = softhsm::shared();
    let token = softhsm::token("logout");
    let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
    let config = Pkcs11Config {
        reconnect_attempts: 5,
        ..token.config.clone()
    };
    let store = Pkcs11KeyStore::open(&config, token.pin())
        .unwrap()
        .with_metrics(metrics.clone());
    let public = store.generate("k", KeyType::EcP256).unwrap();
    let signer = store.signer("k", None).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let saboteur = {
        let done = Arc::clone(&done);
        let label = token.label.clone();
        thread::spawn(move || {
            let session = raw_session(&label);
            let mut logouts = 0;
            while !done.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(15));
                match session.logout() {
                    Ok(()) => logouts += 1,
                    Err(CkError::Pkcs11(RvError::UserNotLoggedIn, _)) => {}
                    Err(e) => panic!("C_Logout: {e}"),
                }
            }
            logouts
        })
    };
    let signers: Vec<_> = (0..2)
        .map(|t| {
            let signer = Arc::clone(&signer);
            let public = public.clone();
            thread::spawn(move || {
                for i in 0..400 {
                    let message = format!("{t}/{i}");
                    let signature = signer.sign(message.as_bytes()).unwrap();
                    public
                        .verify(
                            SignatureAlgorithm::EcdsaP256Sha256,
                            message.as_bytes(),
                            &signature,
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in signers {
        thread.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let logouts = saboteur.join().unwrap();
    assert!(logouts > 0);
    assert!(
        reconnects(&metrics, &token.label) > 0,
        "no reconnect after {logouts} logouts"
    );
    let signed = metrics
        .signatures
        .with_label_values(&["pkcs11", "ecdsa-p256-sha256", "ok"])
        .get();
    assert!(signed >= 800, "{signed}");
}

/// Threads sign while the module is finalised and initialised again (as when a token restarts).
#[test]
fn recovers_when_the_module_is_reinitialized() {
    let _module = softhsm::exclusive();
    let token = softhsm::token("reinit");
    let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
    let config = Pkcs11Config {
        reconnect_attempts: 5,
        ..token.config.clone()
    };
    let store = Pkcs11KeyStore::open(&config, token.pin())
        .unwrap()
        .with_metrics(metrics.clone());
    let signers: Vec<Arc<dyn Signer>> = [(KeyType::EcP256, "ec"), (KeyType::Ed25519, "ed")]
        .into_iter()
        .map(|(key_type, label)| {
            store.generate(label, key_type).unwrap();
            store.signer(label, None).unwrap()
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = signers
        .iter()
        .flat_map(|signer| [Arc::clone(signer), Arc::clone(signer)])
        .map(|signer| {
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut signed = 0;
                while !done.load(Ordering::Relaxed) || signed < 50 {
                    let message = signed.to_string();
                    let signature = signer.sign(message.as_bytes()).unwrap();
                    signer
                        .public_key()
                        .verify(signer.algorithm(), message.as_bytes(), &signature)
                        .unwrap();
                    signed += 1;
                }
                signed
            })
        })
        .collect();
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(40));
        store.danger_reinitialize_module().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for thread in threads {
        assert!(thread.join().unwrap() >= 50);
    }
    assert!(reconnects(&metrics, &token.label) >= 1);
    // Key generation and listing work on the new sessions too.
    store.generate("after", KeyType::EcP256).unwrap();
    assert_eq!(store.keys().unwrap().len(), 3);
}

#[test]
fn a_token_unavailable_past_the_retry_budget_is_reported() {
    let _module = softhsm::shared();
    let token = softhsm::token("no-retries");
    let config = Pkcs11Config {
        reconnect_attempts: 0,
        ..token.config.clone()
    };
    let store = Pkcs11KeyStore::open(&config, token.pin()).unwrap();
    store.generate("k", KeyType::EcP256).unwrap();
    let signer = store.signer("k", None).unwrap();
    raw_session(&token.label).logout().unwrap();
    let err = signer.sign(b"x").unwrap_err();
    assert!(
        matches!(&err, Error::TokenUnavailable { token: t, attempts: 0, .. } if *t == token.label),
        "{err}"
    );
    assert!(err.to_string().contains("CKR_USER_NOT_LOGGED_IN"), "{err}");
}

#[test]
fn init_token_refuses_a_taken_label() {
    let _module = softhsm::shared();
    let token = softhsm::token("taken");
    let err = backbone_hsm::pkcs11::init_token(
        std::path::Path::new(MODULE),
        &token.label,
        &Pin::new(softhsm::SO_PIN),
        &Pin::new(softhsm::USER_PIN),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                key: "token label",
                ..
            }
        ),
        "{err}"
    );
}

fn login(session: &Session) {
    match session.login(
        UserType::User,
        Some(&AuthPin::from(softhsm::USER_PIN.to_owned())),
    ) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
}

fn find(session: &Session, label: &str, class: ObjectClass) -> cryptoki::object::ObjectHandle {
    let template = [
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    session
        .find_objects(&template)
        .unwrap()
        .into_iter()
        .next()
        .unwrap()
}
