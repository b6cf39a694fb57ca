//! `backbone demo`: the demonstration, limited honestly to what is built today.
//!
//! It gives each demo agency (hospital, family doctor, pharmacy, Health Insurance Fund) a signing
//! key, batch-signs sample messages with it, verifies every proof, writes the messages, proofs,
//! public keys and a certificate request per agency into the data directory, serves the metrics of
//! the run on an admin listener and checks them, and says which components are not built yet.
//!
//! ```text
//!  data dir ─▶ key store ─▶ one key per agency ─▶ BatchSigner ─▶ proofs ─▶ verify ─▶ files
//!                                                      │
//!                                          hsm metrics ─▶ admin listener ─▶ /metrics, /ready
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use backbone_hsm::batch::{BatchConfig, BatchSignature, BatchSigner};
use backbone_hsm::cert::{self, Subject};
use backbone_hsm::config::Config as StoreConfig;
use backbone_hsm::{KeyStore, KeyType, Metrics};
use clap::{Args, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{Env, Settings};
use crate::{Error, admin, hsm};

/// Flags of `backbone demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's keys and output; created if missing, reused (keys included) if
    /// present.
    #[arg(long, default_value = "backbone-demo", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Which key store holds the agencies' keys: "data-dir" (software keys in DIR/keys) or
    /// "config" (the configured [hsm] store, e.g. a PKCS#11 token).
    #[arg(long, value_enum, default_value_t = KeyStoreChoice::DataDir)]
    pub key_store: KeyStoreChoice,
    /// Sample messages batch-signed per agency (each becomes a message and a proof file).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub messages: u32,
    /// Address of the demo's admin listener (/metrics, /live, /ready). Port 0 picks a free port,
    /// so the demo never clashes with a running service.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin_listen: SocketAddr,
    /// PIN file for a PKCS#11 store chosen with --key-store config. Default: the configured
    /// hsm.pin_file or hsm.pin_env.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
}

/// Where the demo keeps the agencies' keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyStoreChoice {
    /// Software keys in the data directory.
    DataDir,
    /// The store of the `[hsm]` configuration.
    Config,
}

/// One demo agency: fictional, and its messages hold no personal data.
struct Agency {
    /// Short name: file names and key labels.
    slug: &'static str,
    /// The member name (O in the CSR).
    name: &'static str,
    /// Member class and code (X-Road identifiers; CN is the code).
    class: &'static str,
    code: &'static str,
    /// What its sample messages are.
    message: &'static str,
}

const AGENCIES: [Agency; 4] = [
    Agency { slug: "hospital", name: "Demo Central Hospital", class: "GOV", code: "70000001", message: "referral" },
    Agency { slug: "family-doctor", name: "Demo Family Practice", class: "COM", code: "10000002", message: "e-prescription" },
    Agency { slug: "pharmacy", name: "Demo Pharmacy", class: "COM", code: "10000003", message: "dispensing" },
    Agency { slug: "health-insurance-fund", name: "Demo Health Insurance Fund", class: "GOV", code: "70000004", message: "reimbursement" },
];

/// Components built but not yet part of the demo, with the command that runs them alone.
const NOT_IN_DEMO: [(&str, &str); 2] = [
    ("registry", "built (`backbone registry init|serve|add-…`), but this demo does not register its agencies or send it these CSRs"),
    ("timestamping", "built (`backbone timestamping serve`, `backbone ksi sign|verify`), but this demo does not timestamp its messages"),
];

/// Components of the design that do not exist yet, printed at the end of every run.
const NOT_BUILT: [(&str, &str); 2] = [
    ("gateway", "no messages exchanged between agencies over mTLS, no message logs (only its protocol layer exists)"),
    ("portal", "no citizen view of who accessed which record"),
];

/// Runs the demo.
///
/// # Errors
///
/// Store, file and admin listener failures; [`Error::Check`] when a proof does not verify.
pub fn run(args: &DemoArgs, settings: &Settings, env: &Env) -> Result<(), Error> {
    tracing::info!(version = crate::telemetry::VERSION, config = %settings.summary(), "backbone demo starting");
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    for sub in ["messages", "signatures", "public-keys", "csr"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(Error::io("create directory", dir.join(sub)))?;
    }
    let store_config = match args.key_store {
        KeyStoreChoice::DataDir => StoreConfig::Software { key_dir: dir.join("keys") },
        KeyStoreChoice::Config => settings.hsm.store.clone(),
    };
    let pin = hsm::pin_source(args.pin_file.as_deref(), settings);
    let store = hsm::open_store(&store_config, &pin, env)?;
    println!("Backbone demo, data directory {}", dir.display());
    println!("key store: {}", store.describe());
    if args.key_store == KeyStoreChoice::DataDir {
        println!("  (software keys for development; `--key-store config` uses the configured [hsm] store, e.g. a PKCS#11 token)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Check(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(demo(args, store))
}

async fn demo(args: &DemoArgs, store: Arc<dyn KeyStore>) -> Result<(), Error> {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).map_err(|e| Error::Check(format!("cannot register hsm metrics: {e}")))?;
    let readiness = admin::Readiness::new();
    let keys_ready = readiness.gate("agency keys");
    let server = admin::serve(args.admin_listen, registry, readiness).await?;
    let admin_addr = server.local_addr();
    println!("admin listener: http://{admin_addr} (/metrics, /live, /ready)");
    let before = http_get(admin_addr, "/ready").await?;

    let mut rows = Vec::new();
    for agency in &AGENCIES {
        rows.push(agency_run(args, store.as_ref(), agency, &metrics).await?);
    }
    keys_ready.open();

    let after = http_get(admin_addr, "/ready").await?;
    let scraped = http_get(admin_addr, "/metrics").await?;
    let batches = metric_value(&scraped.1, "backbone_hsm_batch_size_messages_count");
    server.shutdown().await?;

    println!();
    println!("{:<28} {:<36} {:>8} {:>8} {:>9}  certificate request", "agency", "key", "messages", "batches", "verified");
    for row in &rows {
        println!("{:<28} {:<36} {:>8} {:>8} {:>9}  {}", row.name, row.key, row.messages, row.batches, row.verified, row.csr.display());
    }
    println!();
    println!(
        "admin listener check: /ready answered {} before the keys were ready and {} after; /metrics counted {} batch signature(s)",
        before.0,
        after.0,
        batches.map_or_else(|| "no".to_owned(), |b| format!("{b}")),
    );
    if before.0 != 503 || after.0 != 200 || batches.is_none_or(|b| b < 1.0) {
        return Err(Error::Check("the admin listener did not report the demo's state".to_owned()));
    }
    println!("files: messages/, signatures/ (batch proofs, format in hsm/docs/batch-format.md), public-keys/, csr/ under {}", args.data_dir.display());
    println!();
    println!("Shown here: hsm (key stores, batch signing, CSRs) and ops (this binary, configuration, admin listener, telemetry).");
    println!("Built, not yet in this demo:");
    for (component, state) in NOT_IN_DEMO {
        println!("  {component:<13} {state}");
    }
    println!("Not built yet, so this demo does not show them:");
    for (component, missing) in NOT_BUILT {
        println!("  {component:<13} {missing}");
    }
    Ok(())
}

struct Row {
    name: &'static str,
    key: String,
    messages: u32,
    batches: usize,
    verified: u32,
    csr: PathBuf,
}

async fn agency_run(args: &DemoArgs, store: &dyn KeyStore, agency: &Agency, metrics: &Metrics) -> Result<Row, Error> {
    let dir = &args.data_dir;
    let label = format!("demo-{}", agency.slug);
    let (public_key, fresh) = match store.public_key(&label) {
        Ok(public_key) => (public_key, false),
        Err(backbone_hsm::Error::NoSuchKey { .. }) => {
            let generated = store
                .generate(&label, KeyType::EcP256)
                .map_err(Error::hsm(format!("cannot generate the key of {}", agency.name)))?;
            (generated, true)
        }
        Err(e) => return Err(Error::hsm(format!("cannot read the key of {}", agency.name))(e)),
    };
    write(&dir.join("public-keys").join(format!("{}.pem", agency.slug)), public_key.to_pem().as_bytes())?;
    let signer = store.signer(&label, None).map_err(Error::hsm(format!("cannot use the key of {}", agency.name)))?;

    let subject = Subject {
        common_name: agency.code.to_owned(),
        organization: Some(agency.name.to_owned()),
        organizational_unit: None,
        country: None,
        serial_number: Some(format!("DEMO/{}", agency.class)),
        email: None,
    };
    let csr = cert::csr_pem(signer.as_ref(), &subject).map_err(Error::hsm(format!("cannot make the CSR of {}", agency.name)))?;
    let csr_path = PathBuf::from("csr").join(format!("{}.csr.pem", agency.slug));
    write(&dir.join(&csr_path), csr.as_bytes())?;

    let batch = BatchSigner::with_metrics(signer, BatchConfig::default(), metrics)
        .map_err(Error::hsm(format!("cannot start the batch signer of {}", agency.name)))?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=args.messages {
        let batch = batch.clone();
        let message = sample_message(agency, n);
        tasks.spawn(async move {
            let proof = batch.sign(message.as_bytes()).await;
            (n, message, proof)
        });
    }
    let mut roots = std::collections::BTreeSet::new();
    let mut verified = 0;
    while let Some(joined) = tasks.join_next().await {
        let (n, message, proof) = joined.map_err(|e| Error::Check(format!("a signing task failed: {e}")))?;
        let proof = proof.map_err(Error::hsm(format!("batch signing for {} failed", agency.name)))?;
        let stem = format!("{}-{n:04}", agency.slug);
        let bytes = proof.to_bytes();
        // Verify what is on disk, as an auditor would.
        let decoded = BatchSignature::from_bytes(&bytes).map_err(Error::hsm(format!("proof {stem} does not decode")))?;
        decoded.verify(message.as_bytes(), &public_key).map_err(Error::hsm(format!("proof {stem} does not verify")))?;
        write(&dir.join("messages").join(format!("{stem}.json")), message.as_bytes())?;
        write(&dir.join("signatures").join(format!("{stem}.batchsig")), &bytes)?;
        roots.insert(*decoded.root());
        verified += 1;
    }
    batch.shutdown();
    tracing::info!(agency = agency.slug, messages = args.messages, elapsed_ms = started.elapsed().as_millis() as u64, "signed");
    Ok(Row {
        name: agency.name,
        key: format!("{label} ({})", if fresh { "new" } else { "reused" }),
        messages: args.messages,
        batches: roots.len(),
        verified,
        csr: csr_path,
    })
}

/// A synthetic message; the patient is a pseudonym that names no one.
fn sample_message(agency: &Agency, n: u32) -> String {
    format!(
        "{{\"resourceType\":\"Communication\",\"category\":\"{}\",\"sender\":\"{}/{}\",\"subject\":\"pseudonym-demo-{n:04}\",\"sequence\":{n}}}\n",
        agency.message, agency.class, agency.code
    )
}

fn write(path: &Path, contents: &[u8]) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(Error::io("write", path))
}

/// A minimal HTTP/1.1 GET against our own admin listener: (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    let fail = |e: std::io::Error| Error::Admin { addr, source: e };
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(fail)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.map_err(fail)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}
