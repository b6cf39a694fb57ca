//! `backbone registry init|serve|show` and the administrative verbs, over the registry's RocksDB
//! directory and the configured key store.
//!
//! The administrative verbs open the registry's store directly, so they run while `serve` is
//! stopped (RocksDB allows one process per directory); the HTTPS admin API is not built yet.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_registry::anchor::Anchor;
use backbone_registry::id::{GatewayId, InstanceId, MemberClass, MemberId, SubsystemId};
use backbone_registry::model::RevocationReason;
use backbone_registry::server::{DEFAULT_CONF_VALIDITY, DEFAULT_REGENERATE_EVERY, ServeConfig, Server};
use backbone_registry::store::rocks::RocksStore;
use backbone_registry::{Registry, conf};
use clap::{Args, Subcommand};

use crate::Error;
use crate::config::{Env, Settings};
use crate::hsm::{open_store, pin_source};

/// Label of the registry CA key in the key store.
pub const CA_KEY_LABEL: &str = "registry-ca";
/// Label of the global configuration signing key in the key store.
pub const CONF_KEY_LABEL: &str = "registry-conf";

/// `backbone registry ...`
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// The registry's RocksDB directory. Default: backbone-registry.
    #[arg(long, global = true, value_name = "DIR", default_value = "backbone-registry")]
    pub data_dir: PathBuf,
    /// File holding the token's user PIN. Default: the configured hsm.pin_file or hsm.pin_env.
    #[arg(long, global = true, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Who is acting, for the audit log. Default: the USER environment variable, else "cli".
    #[arg(long, global = true)]
    pub actor: Option<String>,
    /// The verb.
    #[command(subcommand)]
    pub command: RegistryCommand,
}

/// The verbs of `backbone registry`.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Create the instance: the CA key and the configuration key in the key store, the CA
    /// certificate, the store, and the configuration anchor file for gateways.
    Init {
        /// The instance id, e.g. EE.
        #[arg(long)]
        instance: String,
        /// A download URL for the anchor; repeat for mirrors. Default:
        /// http://127.0.0.1:8080/globalconf.
        #[arg(long = "url")]
        urls: Vec<String>,
        /// Where to write the anchor file. Default: <data-dir>/anchor.json.
        #[arg(long, value_name = "FILE")]
        anchor_out: Option<PathBuf>,
    },
    /// Serve the global configuration over HTTP, regenerating it periodically.
    Serve {
        /// Address to listen on. Default: 127.0.0.1:8080.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Seconds between versions. Default: 60.
        #[arg(long, default_value_t = DEFAULT_REGENERATE_EVERY.as_secs())]
        regenerate_every: u64,
        /// Seconds each version stays valid. Default: 600.
        #[arg(long, default_value_t = DEFAULT_CONF_VALIDITY.as_secs())]
        conf_validity: u64,
    },
    /// Print the configuration the registry would publish now, as JSON, without publishing it.
    Show,
    /// Add a member class: CODE DESCRIPTION.
    AddMemberClass {
        /// The class code, e.g. GOV.
        code: String,
        /// What the class is for.
        description: String,
    },
    /// Add a member: INSTANCE/CLASS/CODE NAME.
    AddMember {
        /// The member id.
        id: String,
        /// Its legal name.
        name: String,
    },
    /// Add a subsystem: INSTANCE/CLASS/CODE/SUBSYSTEM.
    AddSubsystem {
        /// The subsystem id.
        id: String,
    },
    /// Register a gateway: INSTANCE/CLASS/CODE/SERVERCODE HOST:PORT.
    AddGateway {
        /// The gateway id.
        id: String,
        /// Where peers connect.
        address: String,
    },
    /// Issue a gateway TLS certificate from a PKCS#10 request file (PEM or DER); prints PEM.
    IssueTlsCert {
        /// The gateway id.
        gateway: String,
        /// The request file.
        csr: PathBuf,
    },
    /// Issue a member signing certificate from a PKCS#10 request file (PEM or DER); prints PEM.
    IssueSigningCert {
        /// The member id.
        member: String,
        /// The request file.
        csr: PathBuf,
    },
    /// Revoke a certificate by serial (hex); it leaves the next configuration.
    Revoke {
        /// The serial, lower-case hex as `show` prints it.
        serial: String,
        /// key-compromise, affiliation-changed, superseded, cessation-of-operation or unspecified.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Print the audit log.
    Audit,
}

// === impl RegistryCommand ===

impl RegistryCommand {
    /// `registry verb`, for logs and traces.
    pub fn name(&self) -> &'static str {
        match self {
            RegistryCommand::Init { .. } => "registry init",
            RegistryCommand::Serve { .. } => "registry serve",
            RegistryCommand::Show => "registry show",
            RegistryCommand::AddMemberClass { .. } => "registry add-member-class",
            RegistryCommand::AddMember { .. } => "registry add-member",
            RegistryCommand::AddSubsystem { .. } => "registry add-subsystem",
            RegistryCommand::AddGateway { .. } => "registry add-gateway",
            RegistryCommand::IssueTlsCert { .. } => "registry issue-tls-cert",
            RegistryCommand::IssueSigningCert { .. } => "registry issue-signing-cert",
            RegistryCommand::Revoke { .. } => "registry revoke",
            RegistryCommand::Audit => "registry audit",
        }
    }
}

/// Runs one `backbone registry` verb.
///
/// # Errors
///
/// Refused requests (bad ids, duplicates, unknown records) exit 64; store, key store and network
/// failures exit 1.
pub fn run(args: RegistryArgs, settings: &Settings, env: &Env) -> Result<(), Error> {
    let keys = open_store(&settings.hsm.store, &pin_source(args.pin_file.as_deref(), settings), env)?;
    let actor = args.actor.clone().or_else(|| env.get("USER").map(str::to_owned)).unwrap_or_else(|| "cli".to_owned());
    let now = SystemTime::now();
    if let RegistryCommand::Init { instance, urls, anchor_out } = &args.command {
        return init(keys.as_ref(), &args.data_dir, &actor, instance, urls, anchor_out.as_deref());
    }
    let registry = open(keys.as_ref(), &args.data_dir)?;
    match args.command {
        RegistryCommand::Init { .. } => Err(Error::Unreachable("init handled above")),
        RegistryCommand::Serve { listen, regenerate_every, conf_validity } => {
            let config = ServeConfig { regenerate_every: Duration::from_secs(regenerate_every), conf_validity: Duration::from_secs(conf_validity) };
            serve(registry, config, listen)
        }
        RegistryCommand::Show => {
            let signed = registry.generate(now, DEFAULT_CONF_VALIDITY).map_err(refused)?;
            let conf = conf::parse_unverified(signed.document()).map_err(refused)?;
            println!("{}", serde_json::to_string_pretty(&conf).map_err(|_| Error::Unreachable("conf serialises"))?);
            Ok(())
        }
        RegistryCommand::AddMemberClass { code, description } => {
            registry.add_member_class(&actor, now, MemberClass::new(code).map_err(refused)?, &description).map_err(refused)
        }
        RegistryCommand::AddMember { id, name } => registry.add_member(&actor, now, parse::<MemberId>(&id)?, &name).map_err(refused),
        RegistryCommand::AddSubsystem { id } => registry.add_subsystem(&actor, now, parse::<SubsystemId>(&id)?).map_err(refused),
        RegistryCommand::AddGateway { id, address } => registry.add_gateway(&actor, now, parse::<GatewayId>(&id)?, &address).map_err(refused),
        RegistryCommand::IssueTlsCert { gateway, csr } => {
            let request = std::fs::read(&csr).map_err(Error::io("read", &csr))?;
            let cert = registry.issue_tls_certificate(&actor, now, &parse(&gateway)?, &request).map_err(refused)?;
            print!("{}", backbone_hsm::cert::pem("CERTIFICATE", cert.der()));
            eprintln!("issued TLS certificate serial {}", cert.serial());
            Ok(())
        }
        RegistryCommand::IssueSigningCert { member, csr } => {
            let request = std::fs::read(&csr).map_err(Error::io("read", &csr))?;
            let cert = registry.issue_signing_certificate(&actor, now, &parse(&member)?, &request).map_err(refused)?;
            print!("{}", backbone_hsm::cert::pem("CERTIFICATE", cert.der()));
            eprintln!("issued signing certificate serial {}", cert.serial());
            Ok(())
        }
        RegistryCommand::Revoke { serial, reason } => {
            let reason: RevocationReason = serde_json::from_value(serde_json::Value::String(reason.clone()))
                .map_err(|_| Error::Usage(format!("unknown revocation reason {reason:?}")))?;
            registry.revoke(&actor, now, &serial, reason).map_err(refused)
        }
        RegistryCommand::Audit => {
            for entry in registry.audit_log(1, usize::MAX).map_err(refused)? {
                println!("{}\t{}\t{}\t{}", entry.seq, entry.at, entry.actor, entry.action);
            }
            Ok(())
        }
    }
}

fn init(keys: &dyn KeyStore, data_dir: &Path, actor: &str, instance: &str, urls: &[String], anchor_out: Option<&Path>) -> Result<(), Error> {
    let instance = InstanceId::new(instance).map_err(refused)?;
    let urls = if urls.is_empty() { vec!["http://127.0.0.1:8080/globalconf".to_owned()] } else { urls.to_vec() };
    for label in [CA_KEY_LABEL, CONF_KEY_LABEL] {
        keys.generate(label, KeyType::EcP256).map_err(Error::hsm(format!("cannot generate key '{label}' in {}", keys.describe())))?;
    }
    let (ca, conf_key) = signers(keys)?;
    let store = Arc::new(RocksStore::open(data_dir).map_err(|e| Error::Check(format!("registry store: {e}")))?);
    let registry = Registry::create(store, instance.clone(), ca, conf_key.clone(), actor, SystemTime::now()).map_err(refused)?;
    let anchor = Anchor::new(instance.clone(), conf_key.algorithm(), conf_key.public_key().clone(), urls).map_err(refused)?;
    let anchor_path = anchor_out.map_or_else(|| data_dir.join("anchor.json"), Path::to_owned);
    std::fs::write(&anchor_path, anchor.encode()).map_err(Error::io("write", &anchor_path))?;
    println!("created instance {instance} in {}", data_dir.display());
    println!("CA certificate serial {}", registry.ca_certificate().serial());
    println!("configuration anchor: {} (key fingerprint {})", anchor_path.display(), conf_key.public_key().fingerprint());
    Ok(())
}

fn open(keys: &dyn KeyStore, data_dir: &Path) -> Result<Registry, Error> {
    let (ca, conf_key) = signers(keys)?;
    let store = Arc::new(RocksStore::open(data_dir).map_err(|e| Error::Check(format!("registry store: {e}")))?);
    Registry::open(store, ca, conf_key).map_err(refused)
}

fn signers(keys: &dyn KeyStore) -> Result<(Arc<dyn Signer>, Arc<dyn Signer>), Error> {
    let open = |label: &str| keys.signer(label, None).map_err(Error::hsm(format!("cannot open key '{label}' in {}", keys.describe())));
    Ok((open(CA_KEY_LABEL)?, open(CONF_KEY_LABEL)?))
}

fn serve(registry: Registry, config: ServeConfig, listen: SocketAddr) -> Result<(), Error> {
    config.check().map_err(refused)?;
    let runtime = tokio::runtime::Runtime::new().map_err(Error::io("start the runtime for", "registry serve"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|source| Error::Admin { addr: listen, source })?;
        let server = Server::spawn(Arc::new(registry), config, listener).await.map_err(refused)?;
        println!("serving the global configuration at {}", server.url());
        let _ = tokio::signal::ctrl_c().await;
        server.shutdown().await;
        Ok(())
    })
}

fn parse<T: std::str::FromStr<Err = backbone_registry::Error>>(text: &str) -> Result<T, Error> {
    text.parse().map_err(refused)
}

/// Registry errors the operator acts on exit 64; the rest exit 1.
fn refused(e: backbone_registry::Error) -> Error {
    use backbone_registry::Error as R;
    match e {
        R::InvalidId { .. } | R::Duplicate { .. } | R::NotFound { .. } | R::Refused(_) | R::Csr(_) | R::Decode { .. } => {
            Error::Usage(e.to_string())
        }
        other => Error::Check(other.to_string()),
    }
}
