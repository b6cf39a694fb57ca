//! `backbone timestamping serve`: the keyless timestamping service (KSI aggregator PDUs and the
//! JSON API) over a RocksDB calendar, each second's root signed with a key from the configured
//! key store.
//!
//! ```text
//!  key store ─▶ timestamping key (+ CA key) ─▶ certificate (DATA_DIR/calendar-cert.der)
//!            ─▶ publications key ─▶ certificate with e-mail (DATA_DIR/publications-cert.der)
//!  DATA_DIR/calendar (RocksDB) ─▶ Calendar ─▶ service::spawn_publishing ─▶ http::router ─▶ --listen
//!                                              └─▶ DATA_DIR/ksi-publications.bin (each publication)
//!  timestamping key ─▶ TSA certificate, critical id-kp-timeStamping (DATA_DIR/tsa-cert.der, .pem)
//!  POST /tsa (RFC 3161) ─▶ token ─▶ its hash into the calendar ─▶ DATA_DIR/tsa (RocksDB, by serial)
//! ```
//!
//! The CA certificate is DATA_DIR/calendar-ca-cert.der and .pem: the trust anchor for the
//! publications file (`backbone ksi verify --trust-anchor`).
//!
//! With `--parent URL` it runs as a child aggregator instead: no key store, calendar or data
//! directory; each round root goes to the parent (`--parent-login`, `--parent-key-file`), whose
//! answer finishes the round's signatures.
//!
//! ```text
//!  clients ─▶ http::router ─▶ child::spawn ── round root, level ──▶ parent aggregator (--parent)
//! ```
//!
//! On start it prints `listening on ADDR` on standard output, then serves until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_hsm::cert::{Profile, Subject};
use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_timestamping::authority::{CalendarSigner, issue_certificate, issue_certificates};
use backbone_timestamping::calendar::rocks::RocksStore;
use backbone_timestamping::calendar::{Calendar, CalendarStore};
use backbone_timestamping::child::{self, Parent};
use backbone_timestamping::cms::CmsSigner;
use backbone_timestamping::http::{self, PduAuth, TsaFront};
use backbone_timestamping::publications_file::{self, PublicationsFileSigner};
use backbone_timestamping::round::{DEFAULT_MAX_INPUT_LEVEL, Limits};
use backbone_timestamping::service::{self, Config};
use backbone_timestamping::tsa::store::RocksTokenStore;
use backbone_timestamping::tsa::{self, Authority, Serials};
use clap::{Args, Subcommand};

use crate::config::{Env, PinSource, Settings};
use crate::{Error, hsm};

/// The JSON API and PDU port unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8180";
/// Validity of a newly issued calendar certificate: ten years, longer than any key should live.
pub const CERTIFICATE_DAYS: u64 = 3650;
/// The e-mail address in the publications signer's certificate unless told otherwise; verifiers
/// are told it with `backbone ksi verify --signer-email`.
pub const DEFAULT_PUBLICATIONS_EMAIL: &str = "publications@backbone.invalid";

/// `backbone timestamping ...`
#[derive(Debug, Args)]
pub struct TimestampingArgs {
    /// The verb.
    #[command(subcommand)]
    pub command: TimestampingCommand,
}

/// The verbs of `backbone timestamping`.
#[derive(Debug, Subcommand)]
pub enum TimestampingCommand {
    /// Run the timestamping service: aggregator rounds, calendar, publications, HTTP.
    Serve(ServeArgs),
}

/// Flags of `backbone timestamping serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the PDU and JSON API listener.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Directory of the calendar (RocksDB) and the calendar certificate; created if missing.
    #[arg(long, default_value = "backbone-timestamping", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Round length in whole seconds; each round is one calendar leaf.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub round_seconds: u64,
    /// Seconds between publications of the calendar root (3600: hourly).
    #[arg(long, default_value_t = service::DEFAULT_PUBLICATION_INTERVAL, value_parser = clap::value_parser!(u64).range(1..))]
    pub publication_interval: u64,
    /// Highest input level a client may claim.
    #[arg(long, default_value_t = DEFAULT_MAX_INPUT_LEVEL, value_parser = clap::value_parser!(u8).range(0..=200))]
    pub max_input_level: u8,
    /// Label of the calendar signing key in the key store; generated (ec-p256) if missing.
    #[arg(long, default_value = "timestamping")]
    pub key_label: String,
    /// Label of the key that certifies the calendar key; generated if missing.
    #[arg(long, default_value = "timestamping-ca")]
    pub ca_key_label: String,
    /// Label of the key that signs the publications file; generated (ec-p256) if missing.
    #[arg(long, default_value = "timestamping-publications")]
    pub publications_key_label: String,
    /// E-mail address in the publications signer's certificate (KSI verifiers check it); used
    /// only when the certificate is first issued.
    #[arg(long, default_value = DEFAULT_PUBLICATIONS_EMAIL)]
    pub publications_email: String,
    /// URI written in the publications file's header as where to download it. Default: none.
    #[arg(long, value_name = "URI")]
    pub repository_uri: Option<String>,
    /// The RFC 3161 TSA policy OID every token names (the default is OpenSSL's example policy:
    /// set your own).
    #[arg(long, default_value = tsa::DEFAULT_POLICY, value_name = "OID")]
    pub tsa_policy: String,
    /// The accuracy RFC 3161 tokens claim, in milliseconds.
    #[arg(long, default_value_t = tsa::DEFAULT_ACCURACY_MILLIS, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub tsa_accuracy_millis: u32,
    /// Login id KSI clients put in their PDU headers.
    #[arg(long, default_value = "anon")]
    pub login_id: String,
    /// File holding the PDU HMAC key. Default: none, and the key is the login id, as on KSI's
    /// public test accounts (anon/anon): set a file for anything but a test.
    #[arg(long, value_name = "FILE")]
    pub hmac_key_file: Option<PathBuf>,
    /// PIN file for a PKCS#11 store. Default: the configured hsm.pin_file or hsm.pin_env.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Run as a child aggregator under the aggregator at this URL (http://HOST:PORT/): each
    /// round root is signed there; no calendar, keys or data directory here, and the calendar
    /// flags are ignored. Default: none, this service keeps the calendar.
    #[arg(long, value_name = "URL")]
    pub parent: Option<String>,
    /// Login id at the parent; the parent writes it into its chains as this aggregator's
    /// client id.
    #[arg(long, default_value = "anon", value_name = "ID")]
    pub parent_login: String,
    /// HMAC key at the parent. Default: the parent login id, as on test accounts; visible in
    /// the process list, so prefer --parent-key-file outside tests.
    #[arg(long, value_name = "KEY", conflicts_with = "parent_key_file")]
    pub parent_key: Option<String>,
    /// File holding the HMAC key at the parent.
    #[arg(long, value_name = "FILE")]
    pub parent_key_file: Option<PathBuf>,
    /// Seconds to wait for the parent's answer to one round before answering its clients
    /// with KSI status 0x301.
    #[arg(long, default_value_t = child::DEFAULT_PARENT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=600))]
    pub parent_timeout_seconds: u64,
}

/// Runs one `backbone timestamping` verb.
///
/// # Errors
///
/// Key store, storage and listener failures.
pub fn run(args: TimestampingArgs, settings: &Settings, env: &Env) -> Result<(), Error> {
    match args.command {
        TimestampingCommand::Serve(serve) => run_serve(&serve, settings, env),
    }
}

fn run_serve(args: &ServeArgs, settings: &Settings, env: &Env) -> Result<(), Error> {
    if let Some(url) = &args.parent {
        return run_child(args, url);
    }
    let pin = args
        .pin_file
        .clone()
        .map_or_else(|| settings.hsm.pin.clone(), PinSource::File);
    let store = hsm::open_store(&settings.hsm.store, &pin, env)?;
    let key = signer(store.as_ref(), &args.key_label)?;
    backbone_hsm::private::create_dir(&args.data_dir)
        .map_err(Error::io("create directory", &args.data_dir))?;
    let certificate = certificate(
        store.as_ref(),
        key.as_ref(),
        &args.ca_key_label,
        &args.data_dir,
    )?;
    let calendar_signer = CalendarSigner::new(Arc::clone(&key), &certificate)
        .map_err(failed("cannot use the calendar certificate"))?;
    let publications_key = signer(store.as_ref(), &args.publications_key_label)?;
    let subject = Subject {
        common_name: "Backbone publications".to_owned(),
        organization: Some("Backbone".to_owned()),
        email: Some(args.publications_email.clone()),
        ..Subject::default()
    };
    let issued = issued_by_ca(
        store.as_ref(),
        &args.ca_key_label,
        &args.data_dir,
        "publications-cert.der",
        publications_key.as_ref(),
        &subject,
        Profile::MemberSigning,
        3,
    )?;
    let publications_cms = CmsSigner::new(publications_key, &issued, Vec::new())
        .map_err(failed("cannot use the publications certificate"))?;
    let publications_path = args.data_dir.join(publications_file::FILE_NAME);
    let publications_file = PublicationsFileSigner::new(
        publications_cms,
        Some(publications_path),
        args.repository_uri.clone(),
    );
    let policy = args.tsa_policy.parse().map_err(|_| {
        Error::Usage(format!(
            "--tsa-policy {:?}: not a dotted object identifier",
            args.tsa_policy
        ))
    })?;
    let tsa_subject = Subject {
        common_name: "Backbone time-stamping authority".to_owned(),
        organization: Some("Backbone".to_owned()),
        ..Subject::default()
    };
    let tsa_der = issued_by_ca(
        store.as_ref(),
        &args.ca_key_label,
        &args.data_dir,
        "tsa-cert.der",
        key.as_ref(),
        &tsa_subject,
        Profile::TimeStamping,
        4,
    )?;
    let tsa_cms = CmsSigner::new(Arc::clone(&key), &tsa_der, Vec::new())
        .map_err(failed("cannot use the TSA certificate"))?;
    let tsa_dir = args.data_dir.join("tsa");
    let token_store = RocksTokenStore::open(&tsa_dir).map_err(|e| {
        Error::Check(format!(
            "cannot open the token store at {}: {e}",
            tsa_dir.display()
        ))
    })?;
    let calendar_dir = args.data_dir.join("calendar");
    let rocks = RocksStore::open(&calendar_dir).map_err(|e| {
        Error::Check(format!(
            "cannot open the calendar at {}: {e}",
            calendar_dir.display()
        ))
    })?;
    let boxed: Box<dyn CalendarStore> = Box::new(rocks);
    let calendar = Calendar::open(boxed).map_err(failed("cannot open the calendar"))?;
    let hmac_key = hmac_key(args)?;
    let config = Config {
        round: Duration::from_secs(args.round_seconds),
        limits: Limits {
            max_input_level: args.max_input_level,
            ..Limits::default()
        },
        publication_interval: args.publication_interval,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Check(format!("cannot start the runtime: {source}")))?;
    runtime.block_on(async {
        let head = calendar.head();
        // Serial numbers start past every second an earlier run answered a token in (tsa.rs).
        let epoch = head.map_or(0, |h| h.saturating_add(1)).max(service::now());
        let tsa_config = tsa::Config { policy, accuracy_millis: args.tsa_accuracy_millis };
        let authority = Authority::new(tsa_cms, tsa_config, Serials::new(epoch)).map_err(failed("cannot start the RFC 3161 authority"))?;
        let front = TsaFront { authority, store: Box::new(token_store) };
        let running = service::spawn_publishing(calendar, calendar_signer, config, publications_file)
            .map_err(failed("cannot start the service"))?;
        let auth = PduAuth { login_id: args.login_id.clone(), key: hmac_key };
        let app = http::router_with_tsa(running.handle.clone(), auth, Some(Arc::new(front)));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|source| Error::Check(format!("cannot listen on {}: {source}", args.listen)))?;
        let local = listener.local_addr().map_err(|source| Error::Check(format!("cannot listen on {}: {source}", args.listen)))?;
        tracing::info!(listen = %local, data_dir = %args.data_dir.display(), calendar_head = ?head, round_seconds = args.round_seconds,
            publication_interval = args.publication_interval, key = %args.key_label, tsa_policy = %args.tsa_policy,
            tsa_serial_epoch = epoch, "timestamping service started");
        println!("listening on {local}");
        backbone_server::serve_router(listener, app, backbone_server::Limits::default().with_max_body(http::MAX_BODY), shutdown_signal())
            .await
            .map_err(|source| Error::Check(format!("listener on {local} failed: {source}")))?;
        running.shutdown().await;
        Ok::<(), Error>(())
    })
}

/// `backbone timestamping serve --parent URL`: a child aggregator, its rounds signed by the
/// parent.
fn run_child(args: &ServeArgs, url: &str) -> Result<(), Error> {
    let parent_key = match (&args.parent_key, &args.parent_key_file) {
        (_, Some(path)) => std::fs::read(path).map_err(Error::io("read", path))?,
        (Some(key), None) => key.clone().into_bytes(),
        (None, None) => {
            tracing::warn!(parent_login = %args.parent_login, "no --parent-key-file: the HMAC key at the parent is the login id (test setting)");
            args.parent_login.clone().into_bytes()
        }
    };
    let mut parent = Parent::from_url(url, &args.parent_login, parent_key)
        .map_err(|e| Error::Usage(format!("--parent: {e}")))?;
    parent.timeout = Duration::from_secs(args.parent_timeout_seconds);
    let config = child::Config {
        round: Duration::from_secs(args.round_seconds),
        limits: Limits {
            max_input_level: args.max_input_level,
            ..Limits::default()
        },
    };
    let auth = PduAuth {
        login_id: args.login_id.clone(),
        key: hmac_key(args)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Check(format!("cannot start the runtime: {source}")))?;
    runtime.block_on(async {
        let running = child::spawn(parent, config).map_err(failed("cannot start the child aggregator"))?;
        let app = http::router(running.handle.clone(), auth);
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|source| Error::Check(format!("cannot listen on {}: {source}", args.listen)))?;
        let local = listener.local_addr().map_err(|source| Error::Check(format!("cannot listen on {}: {source}", args.listen)))?;
        tracing::info!(listen = %local, parent = %running.handle.parent().url(), parent_login = %args.parent_login,
            round_seconds = args.round_seconds, "child aggregator started");
        println!("listening on {local}");
        backbone_server::serve_router(listener, app, backbone_server::Limits::default().with_max_body(http::MAX_BODY), shutdown_signal())
            .await
            .map_err(|source| Error::Check(format!("listener on {local} failed: {source}")))?;
        running.shutdown().await;
        Ok::<(), Error>(())
    })
}

/// The HMAC key of this service's own PDU clients.
fn hmac_key(args: &ServeArgs) -> Result<Vec<u8>, Error> {
    match &args.hmac_key_file {
        Some(path) => std::fs::read(path).map_err(Error::io("read", path)),
        None => {
            tracing::warn!(login_id = %args.login_id, "no --hmac-key-file: the PDU HMAC key is the login id (test setting)");
            Ok(args.login_id.clone().into_bytes())
        }
    }
}

/// A signer for `label`, generating an ec-p256 key first if the store has none.
fn signer(store: &dyn KeyStore, label: &str) -> Result<Arc<dyn Signer>, Error> {
    if store.public_key(label).is_err() {
        store
            .generate(label, KeyType::EcP256)
            .map_err(Error::hsm(format!("cannot generate key '{label}'")))?;
        tracing::info!(label, "generated the key");
    }
    store
        .signer(label, None)
        .map_err(Error::hsm(format!("cannot open key '{label}'")))
}

/// The calendar certificate from the data directory, issued (with its CA) on first start.
fn certificate(
    store: &dyn KeyStore,
    key: &dyn Signer,
    ca_label: &str,
    dir: &Path,
) -> Result<Vec<u8>, Error> {
    let path = dir.join("calendar-cert.der");
    if path.exists() {
        return std::fs::read(&path).map_err(Error::io("read", &path));
    }
    let ca = signer(store, ca_label)?;
    let not_before = SystemTime::now() - Duration::from_secs(60);
    let (ca_der, der) = issue_certificates(ca.as_ref(), key, not_before, CERTIFICATE_DAYS)
        .map_err(failed("cannot issue the calendar certificate"))?;
    let ca_path = dir.join("calendar-ca-cert.der");
    std::fs::write(&ca_path, &ca_der).map_err(Error::io("write", &ca_path))?;
    write_pem(&dir.join("calendar-ca-cert.pem"), &ca_der)?;
    std::fs::write(&path, &der).map_err(Error::io("write", &path))?;
    Ok(der)
}

/// A certificate `file_name` in the data directory, issued for `key` by the timestamping CA on
/// first start (and written as DER and PEM).
#[allow(clippy::too_many_arguments)] // One per certificate field.
fn issued_by_ca(
    store: &dyn KeyStore,
    ca_label: &str,
    dir: &Path,
    file_name: &str,
    key: &dyn Signer,
    subject: &Subject,
    profile: Profile,
    serial_tag: u8,
) -> Result<Vec<u8>, Error> {
    let path = dir.join(file_name);
    if path.exists() {
        return std::fs::read(&path).map_err(Error::io("read", &path));
    }
    let ca = signer(store, ca_label)?;
    let ca_path = dir.join("calendar-ca-cert.der");
    let ca_der = std::fs::read(&ca_path).map_err(Error::io("read", &ca_path))?;
    if !dir.join("calendar-ca-cert.pem").exists() {
        write_pem(&dir.join("calendar-ca-cert.pem"), &ca_der)?;
    }
    let not_before = SystemTime::now() - Duration::from_secs(60);
    let der = issue_certificate(
        ca.as_ref(),
        &ca_der,
        key.public_key(),
        subject,
        profile,
        not_before,
        CERTIFICATE_DAYS,
        serial_tag,
    )
    .map_err(failed("cannot issue a certificate"))?;
    std::fs::write(&path, &der).map_err(Error::io("write", &path))?;
    write_pem(&path.with_extension("pem"), &der)?;
    tracing::info!(path = %path.display(), label = key.label(), "issued a certificate");
    Ok(der)
}

fn write_pem(path: &Path, der: &[u8]) -> Result<(), Error> {
    std::fs::write(path, backbone_hsm::cert::pem("CERTIFICATE", der))
        .map_err(Error::io("write", path))
}

fn failed(action: &'static str) -> impl FnOnce(backbone_timestamping::Error) -> Error {
    move |source| Error::Check(format!("{action}: {source}"))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
