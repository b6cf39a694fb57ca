//! Wrapping data keys with a secret key held in the store, against SoftHSM2 and the software
//! store: round trips, tampering and wrong keys refused, keys that cannot be read out, and one
//! wrapped format shared by both backends.
// clippy.toml lets `#[test]` functions unwrap; the helpers below are test code too.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

#[path = "common/softhsm.rs"]
mod softhsm;

use std::os::unix::fs::PermissionsExt;

use backbone_hsm::pkcs11::Pkcs11KeyStore;
use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::wrap::{IV_LEN, TAG_LEN};
use backbone_hsm::{Error, KeyStore, KeyType};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use softhsm::{MODULE, TestToken};

const DATA_KEY: [u8; 32] = [0x5a; 32];

fn open(token: &TestToken) -> Pkcs11KeyStore {
    Pkcs11KeyStore::open(&token.config, token.pin()).unwrap()
}

/// What every backend must do: round trip, fresh IVs, tampering and wrong keys refused.
fn check_wrapper(store: &dyn KeyStore) {
    store.generate_wrapping_key("data-key-wrap").unwrap();
    store.generate_wrapping_key("other").unwrap();
    let taken = store.generate_wrapping_key("data-key-wrap").unwrap_err();
    assert!(matches!(taken, Error::KeyExists { .. }), "{taken}");
    // A key pair may share the label of a wrapping key; they are different kinds of key.
    store.generate("data-key-wrap", KeyType::EcP256).unwrap();

    let wrapper = store.wrapper("data-key-wrap").unwrap();
    assert_eq!(wrapper.label(), "data-key-wrap");
    let wrapped = wrapper.wrap(&DATA_KEY).unwrap();
    assert_eq!(wrapped.len(), 1 + IV_LEN + DATA_KEY.len() + TAG_LEN);
    assert!(
        !wrapped.windows(8).any(|w| w == &DATA_KEY[..8]),
        "the key is not in the clear"
    );
    assert_eq!(&wrapper.unwrap(&wrapped).unwrap()[..], &DATA_KEY);
    // A fresh IV every time.
    let again = wrapper.wrap(&DATA_KEY).unwrap();
    assert_ne!(wrapped, again);
    assert_eq!(&wrapper.unwrap(&again).unwrap()[..], &DATA_KEY);

    // One flipped bit anywhere after the version byte: refused, no bytes returned.
    for at in 1..wrapped.len() {
        let mut tampered = wrapped.clone();
        tampered[at] ^= 0x01;
        let err = wrapper.unwrap(&tampered).unwrap_err();
        assert!(matches!(err, Error::Unwrap { .. }), "byte {at}: {err}");
    }
    // Another version, a truncation: refused as malformed.
    let mut other_version = wrapped.clone();
    other_version[0] = 0x02;
    assert!(matches!(
        wrapper.unwrap(&other_version),
        Err(Error::Decode { .. })
    ));
    assert!(matches!(
        wrapper.unwrap(&wrapped[..20]),
        Err(Error::Decode { .. })
    ));

    // Another wrapping key: refused.
    let other = store.wrapper("other").unwrap();
    let err = other.unwrap(&wrapped).unwrap_err();
    assert!(
        matches!(&err, Error::Unwrap { label, .. } if label == "other"),
        "{err}"
    );

    // Missing key, empty input.
    let err = store.wrapper("missing").unwrap_err();
    assert!(
        matches!(&err, Error::NoSuchKey { kind: "secret", .. }),
        "{err}"
    );
    assert!(matches!(wrapper.wrap(&[]), Err(Error::Config { .. })));
}

#[test]
fn pkcs11_wraps_and_refuses_tampering_and_other_keys() {
    let _module = softhsm::shared();
    let token = softhsm::token("wrap");
    let store = open(&token);
    check_wrapper(&store);
    // The key list holds key pairs only.
    let labels: Vec<_> = store.keys().unwrap().into_iter().map(|k| k.label).collect();
    assert_eq!(labels, ["data-key-wrap"]);
    // A second store on the token (another process, a restart) unwraps what the first wrapped.
    let wrapped = store
        .wrapper("data-key-wrap")
        .unwrap()
        .wrap(&DATA_KEY)
        .unwrap();
    drop(store);
    let reopened = open(&token);
    assert_eq!(
        &reopened
            .wrapper("data-key-wrap")
            .unwrap()
            .unwrap(&wrapped)
            .unwrap()[..],
        &DATA_KEY
    );
}

#[test]
fn software_store_wraps_and_refuses_tampering_and_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = SoftwareKeyStore::open(dir.path().join("keys")).unwrap();
    check_wrapper(&store);
    let file = store.dir().join("data-key-wrap.aes");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read(&file).unwrap().len(), 32);
    // A key file of the wrong length is refused, not used.
    std::fs::write(store.dir().join("short.aes"), [1; 16]).unwrap();
    assert!(matches!(store.wrapper("short"), Err(Error::Decode { .. })));
}

#[test]
fn pkcs11_wrapping_key_is_sensitive_and_not_extractable() {
    let _module = softhsm::shared();
    let token = softhsm::token("wrap-attributes");
    let store = open(&token);
    store.generate_wrapping_key("data-key-wrap").unwrap();
    let session = raw_session(&token.label);
    login(&session);
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(b"data-key-wrap".to_vec()),
    ];
    let key = session
        .find_objects(&template)
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::AlwaysSensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::Wrap,
            ],
        )
        .unwrap();
    assert_eq!(attributes.len(), 11, "{attributes:?}");
    for attribute in &attributes {
        match attribute {
            Attribute::KeyType(t) => assert_eq!(*t, CkKeyType::AES),
            Attribute::ValueLen(len) => assert_eq!(u64::from(*len), 32),
            Attribute::Token(v)
            | Attribute::Private(v)
            | Attribute::Sensitive(v)
            | Attribute::AlwaysSensitive(v)
            | Attribute::NeverExtractable(v)
            | Attribute::Encrypt(v)
            | Attribute::Decrypt(v) => assert!(*v, "{attribute:?}"),
            Attribute::Extractable(v) | Attribute::Wrap(v) => assert!(!*v, "{attribute:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    // The key value cannot be read...
    match session.get_attributes(key, &[AttributeType::Value]) {
        Ok(values) => assert!(values.is_empty(), "{values:?}"),
        Err(e) => assert!(
            matches!(e, CkError::Pkcs11(RvError::AttributeSensitive, _)),
            "{e}"
        ),
    }
    // ... nor wrapped out of the token by another key.
    store.generate_wrapping_key("exporter").unwrap();
    let exporter_template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(b"exporter".to_vec()),
    ];
    let exporter = session
        .find_objects(&exporter_template)
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let exported = session.wrap_key(
        &cryptoki::mechanism::Mechanism::AesKeyWrapPad,
        exporter,
        key,
    );
    assert!(
        exported.is_err(),
        "the wrapping key was wrapped out: {exported:?}"
    );
}

#[test]
fn both_backends_write_one_format() {
    // The same AES key on a token (imported for this test only) and in a software store: each
    // unwraps what the other wrapped.
    let _module = softhsm::shared();
    let token = softhsm::token("wrap-format");
    let store = open(&token);
    let secret = [0x42; 32];
    let session = raw_session(&token.label);
    login(&session);
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(CkKeyType::AES),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Value(secret.to_vec()),
            Attribute::Label(b"shared".to_vec()),
        ])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shared.aes"), secret).unwrap();
    let software = SoftwareKeyStore::open(dir.path()).unwrap();

    let hsm_wrapper = store.wrapper("shared").unwrap();
    let soft_wrapper = software.wrapper("shared").unwrap();
    let by_hsm = hsm_wrapper.wrap(&DATA_KEY).unwrap();
    let by_software = soft_wrapper.wrap(&DATA_KEY).unwrap();
    assert_eq!(&soft_wrapper.unwrap(&by_hsm).unwrap()[..], &DATA_KEY);
    assert_eq!(&hsm_wrapper.unwrap(&by_software).unwrap()[..], &DATA_KEY);
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

fn login(session: &Session) {
    match session.login(
        UserType::User,
        Some(&AuthPin::from(softhsm::USER_PIN.to_owned())),
    ) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
}
