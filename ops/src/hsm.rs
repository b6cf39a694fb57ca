//! `backbone hsm keygen|list|pubkey|csr|selftest`: the operator's tools for the configured key
//! store, a directory of software keys or a PKCS#11 token.

mod selftest;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backbone_hsm::cert::{self, Subject};
use backbone_hsm::config::Config as StoreConfig;
use backbone_hsm::{KeyStore, KeyType};
use clap::Args;

pub use self::selftest::SelftestArgs;
use crate::Error;
use crate::cli::{HsmArgs, HsmCommand};
use crate::config::{Env, PinSource, Settings};

/// Flags of `backbone hsm csr`.
#[derive(Debug, Args)]
pub struct CsrArgs {
    /// Label of the key that the request certifies and is signed with.
    #[arg(long)]
    pub label: String,
    /// Subject common name (CN): in X-Road, the member code or the gateway code.
    #[arg(long)]
    pub common_name: String,
    /// Subject organization (O): the member's name. Default: none.
    #[arg(long)]
    pub organization: Option<String>,
    /// Subject organizational unit (OU). Default: none.
    #[arg(long)]
    pub organizational_unit: Option<String>,
    /// Subject country (C), two letters. Default: none.
    #[arg(long)]
    pub country: Option<String>,
    /// Subject serialNumber: in X-Road, instance/member-class. Default: none.
    #[arg(long)]
    pub serial_number: Option<String>,
    /// Write the PEM request to this file instead of standard output. Never overwrites a file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs one `backbone hsm` verb against the configured store.
///
/// # Errors
///
/// The store's errors, wrapped with the label and store involved.
pub fn run(args: HsmArgs, settings: &Settings, env: &Env) -> Result<(), Error> {
    let store = open_store(
        &settings.hsm.store,
        &pin_source(args.pin_file.as_deref(), settings),
        env,
    )?;
    match args.command {
        HsmCommand::Keygen { label, key_type } => keygen(store.as_ref(), &label, key_type),
        HsmCommand::List => list(store.as_ref()),
        HsmCommand::Pubkey { label } => {
            let public_key = store
                .public_key(&label)
                .map_err(Error::hsm(format!("cannot read key '{label}'")))?;
            print!("{}", public_key.to_pem());
            Ok(())
        }
        HsmCommand::Csr(csr_args) => csr(store.as_ref(), &csr_args),
        HsmCommand::Selftest(selftest_args) => selftest::run(store, &selftest_args),
    }
}

/// Opens the store that `config` names, reading the PIN from `pin` for PKCS#11 tokens only.
///
/// # Errors
///
/// [`Error::Hsm`] when the PIN cannot be read or the store cannot be opened.
pub fn open_store(
    config: &StoreConfig,
    pin: &PinSource,
    env: &Env,
) -> Result<Arc<dyn KeyStore>, Error> {
    let (what, pin) = match config {
        StoreConfig::Software { key_dir } => (
            format!("software key directory {}", key_dir.display()),
            None,
        ),
        StoreConfig::Pkcs11(p) => {
            let what = format!(
                "PKCS#11 token '{}' in {}",
                p.token_label,
                p.module.display()
            );
            let pin = pin
                .read(env)
                .map_err(Error::hsm(format!("cannot open {what}")))?;
            (what, Some(pin))
        }
    };
    backbone_hsm::config::open(config, pin).map_err(Error::hsm(format!("cannot open {what}")))
}

/// The PIN source: the `--pin-file` flag when given, else the configuration's.
pub fn pin_source(flag: Option<&Path>, settings: &Settings) -> PinSource {
    flag.map_or_else(
        || settings.hsm.pin.clone(),
        |file| PinSource::File(file.to_owned()),
    )
}

/// The key labelled `label` in `keys`, made (P-256) if it is missing; and whether it was made.
///
/// # Errors
///
/// [`Error::Hsm`] when the store cannot make or open it.
pub fn key_or_generate(
    keys: &dyn KeyStore,
    label: &str,
) -> Result<(Arc<dyn backbone_hsm::Signer>, bool), Error> {
    let made = keys.public_key(label).is_err();
    if made {
        keys.generate(label, KeyType::EcP256)
            .map_err(Error::hsm(format!(
                "cannot generate key '{label}' in {}",
                keys.describe()
            )))?;
    }
    let signer = keys.signer(label, None).map_err(Error::hsm(format!(
        "cannot open key '{label}' in {}",
        keys.describe()
    )))?;
    Ok((signer, made))
}

/// An information system's TLS identity for its gateway's client port: the key labelled
/// `label` (made if missing) and its self-signed certificate named `name` in `cert_file` (made,
/// valid two years, when missing or when the key was just made). The certificate is what the
/// gateway's operator registers (`backbone gateway add-client-cert`).
///
/// # Errors
///
/// [`Error::Hsm`] for the key, [`Error::Io`] for the file.
pub fn system_identity(
    keys: &dyn KeyStore,
    label: &str,
    name: &str,
    cert_file: &Path,
) -> Result<(Arc<dyn backbone_hsm::Signer>, Vec<u8>), Error> {
    let (key, made) = key_or_generate(keys, label)?;
    if !made
        && let Ok(bytes) = std::fs::read(cert_file)
        && let Some(der) = backbone_gateway::admin::certificate_der(&bytes)
    {
        return Ok((key, der));
    }
    let der = cert::self_signed_certificate(
        key.as_ref(),
        name,
        std::time::Duration::from_secs(2 * 365 * 86_400),
    )
    .map_err(Error::hsm("cannot make the certificate".to_owned()))?;
    std::fs::write(cert_file, cert::pem("CERTIFICATE", &der))
        .map_err(Error::io("write", cert_file))?;
    Ok((key, der))
}

fn keygen(store: &dyn KeyStore, label: &str, key_type: KeyType) -> Result<(), Error> {
    let public_key = store.generate(label, key_type).map_err(Error::hsm(format!(
        "cannot generate a {key_type} key '{label}' in {}",
        store.describe()
    )))?;
    println!("generated {key_type} key '{label}' in {}", store.describe());
    println!(
        "fingerprint (SHA-256 of the public key): {}",
        public_key.fingerprint()
    );
    Ok(())
}

fn list(store: &dyn KeyStore) -> Result<(), Error> {
    let keys = store.keys().map_err(Error::hsm(format!(
        "cannot list the keys in {}",
        store.describe()
    )))?;
    println!("# {} key(s) in {}", keys.len(), store.describe());
    println!("# label\ttype\tfingerprint (SHA-256 of the public key)");
    for key in keys {
        println!(
            "{}\t{}\t{}",
            key.label,
            key.public_key.key_type(),
            key.public_key.fingerprint()
        );
    }
    Ok(())
}

fn csr(store: &dyn KeyStore, args: &CsrArgs) -> Result<(), Error> {
    if let Some(country) = &args.country
        && (country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(Error::Usage(format!(
            "--country {country:?}: expected two upper-case letters (ISO 3166)"
        )));
    }
    let label = &args.label;
    let signer = store
        .signer(label, None)
        .map_err(Error::hsm(format!("cannot use key '{label}'")))?;
    let subject = Subject {
        common_name: args.common_name.clone(),
        organization: args.organization.clone(),
        organizational_unit: args.organizational_unit.clone(),
        country: args.country.clone(),
        serial_number: args.serial_number.clone(),
        email: None,
    };
    let der = cert::csr_der(signer.as_ref(), &subject).map_err(Error::hsm(format!(
        "cannot make a certificate request with key '{label}'"
    )))?;
    // Check what we hand out: the self-signature verifies and certifies the key in the store.
    let verified = cert::verify_csr(&der)
        .map_err(Error::hsm("the new certificate request does not verify"))?;
    if verified.public_key != *signer.public_key() {
        return Err(Error::Check(format!(
            "the request for key '{label}' certifies another public key"
        )));
    }
    let pem = cert::pem("CERTIFICATE REQUEST", &der);
    match &args.out {
        Some(path) => {
            write_new(path, pem.as_bytes())?;
            eprintln!(
                "wrote certificate request for key '{label}' to {}",
                path.display()
            );
        }
        None => print!("{pem}"),
    }
    Ok(())
}

/// Writes a new file, refusing to replace an existing one.
pub(crate) fn write_new(path: &Path, contents: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(Error::io("create", path))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(Error::io("write", path))
}
