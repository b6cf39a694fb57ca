//! `backbone registry init|serve|show` and the administrative verbs.
//!
//! ```text
//!  local:  verb ─▶ Operation ─▶ Registry (RocksDB directory, CA key in the key store) ─▶ audit as --actor
//!  remote: verb ─▶ Operation ─▶ AdminClient (TLS 1.3, admin key in the key store, pinned
//!          server certificate) ─▶ HTTPS admin API of `registry serve` ─▶ audit as the administrator
//! ```
//!
//! Local verbs open the store directly, so they run while `serve` is stopped (RocksDB allows one
//! process per directory); while it runs, give `--admin` and the verbs go to its admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_registry::admin::AdminServer;
use backbone_registry::admin::client::{AdminClient, ClientError};
use backbone_registry::anchor::Anchor;
use backbone_registry::id::InstanceId;
use backbone_registry::model::RevocationReason;
use backbone_registry::operation::{Operation, Outcome};
use backbone_registry::server::{
    DEFAULT_CONF_VALIDITY, DEFAULT_REGENERATE_EVERY, ServeConfig, Server,
};
use backbone_registry::store::rocks::RocksStore;
use backbone_registry::{GlobalConf, Registry, conf};
use clap::{Args, Subcommand};

use crate::Error;
use crate::config::{Env, Settings};
use crate::hsm::{open_store, pin_source};

/// Label of the registry CA key in the key store.
pub const CA_KEY_LABEL: &str = "registry-ca";
/// Label of the global configuration signing key in the key store.
pub const CONF_KEY_LABEL: &str = "registry-conf";
/// Label of the admin API's TLS key in the key store.
pub const ADMIN_TLS_KEY_LABEL: &str = "registry-admin-tls";
/// File in the data directory holding the admin API's certificate (PEM), which administrators pin.
pub const ADMIN_CERT_FILE: &str = "admin-api-cert.pem";
/// File in the data directory holding the CA certificate (PEM).
pub const CA_CERT_FILE: &str = "ca-cert.pem";

/// `backbone registry ...`
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// The registry's RocksDB directory. Default: backbone-registry.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "backbone-registry"
    )]
    pub data_dir: PathBuf,
    /// File holding the token's user PIN. Default: the configured hsm.pin_file or hsm.pin_env.
    #[arg(long, global = true, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Who is acting, for the audit log of local verbs. Default: the USER environment variable,
    /// else "cli". Over the admin API the administrator's certificate names the actor.
    #[arg(long, global = true)]
    pub actor: Option<String>,
    /// Send the verb to the admin API of a running registry at HOST:PORT instead of opening the
    /// store. Needs --admin-key, --admin-cert and --registry-cert.
    #[arg(long, global = true, value_name = "HOST:PORT", requires_all = ["admin_key", "admin_cert", "registry_cert"])]
    pub admin: Option<SocketAddr>,
    /// Label of the administrator's key in the key store.
    #[arg(long, global = true, value_name = "LABEL")]
    pub admin_key: Option<String>,
    /// The administrator's certificate (PEM), from `add-admin`.
    #[arg(long, global = true, value_name = "FILE")]
    pub admin_cert: Option<PathBuf>,
    /// The admin API's certificate (PEM, `admin-api-cert.pem` in the registry's data directory),
    /// the only server certificate accepted.
    #[arg(long, global = true, value_name = "FILE")]
    pub registry_cert: Option<PathBuf>,
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
    /// Serve the global configuration over HTTP, regenerating it periodically, and the HTTPS
    /// admin API.
    Serve {
        /// Address to listen on. Default: 127.0.0.1:8080.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the HTTPS admin API. Default: 127.0.0.1:8443.
        #[arg(long, default_value = "127.0.0.1:8443")]
        admin_listen: SocketAddr,
        /// Seconds between versions. Default: 60.
        #[arg(long, default_value_t = DEFAULT_REGENERATE_EVERY.as_secs())]
        regenerate_every: u64,
        /// JSON signing endpoint of a timestamping service (http://HOST:PORT/sign): each version is
        /// then covered by a keyless signature, served at /globalconf/VERSION/keyless-signature.
        #[arg(long, value_name = "URL")]
        timestamping_url: Option<String>,
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
    /// Add a service to the catalogue: INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE[/VERSION] DESCRIPTION.
    AddService {
        /// The service id.
        id: String,
        /// What it does.
        description: String,
        /// The service carries personal health data: requests must name the data subject and the
        /// purpose of use.
        #[arg(long)]
        personal_health_data: bool,
    },
    /// Add a global group: INSTANCE/CODE DESCRIPTION.
    AddGroup {
        /// The group id.
        id: String,
        /// What it is for.
        description: String,
    },
    /// Add a member or subsystem to a global group: GROUP CLIENT.
    AddGroupMember {
        /// The group id.
        group: String,
        /// The member or subsystem id.
        client: String,
    },
    /// Approve a timestamping service.
    AddTimestampingService {
        /// Its unique name.
        name: String,
        /// Aggregator URL.
        #[arg(long)]
        aggregator_url: String,
        /// Extender URL.
        #[arg(long)]
        extender_url: String,
        /// Publications file URL.
        #[arg(long)]
        publications_url: String,
        /// The certificate (PEM) whose key signs the publications file.
        #[arg(long, value_name = "FILE")]
        publication_cert: PathBuf,
    },
    /// Add a registry administrator from a PKCS#10 request for their key; prints their
    /// certificate (PEM) for --admin-cert.
    AddAdmin {
        /// The administrator's name, as the audit log shows it.
        name: String,
        /// The request file (PEM or DER).
        csr: PathBuf,
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
            RegistryCommand::AddService { .. } => "registry add-service",
            RegistryCommand::AddGroup { .. } => "registry add-group",
            RegistryCommand::AddGroupMember { .. } => "registry add-group-member",
            RegistryCommand::AddTimestampingService { .. } => "registry add-timestamping-service",
            RegistryCommand::AddAdmin { .. } => "registry add-admin",
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
    let keys = open_store(
        &settings.hsm.store,
        &pin_source(args.pin_file.as_deref(), settings),
        env,
    )?;
    if let Some(address) = args.admin {
        return remote(&args, keys.as_ref(), address);
    }
    let actor = args
        .actor
        .clone()
        .or_else(|| env.get("USER").map(str::to_owned))
        .unwrap_or_else(|| "cli".to_owned());
    let now = SystemTime::now();
    match args.command {
        RegistryCommand::Init {
            instance,
            urls,
            anchor_out,
        } => init(
            keys.as_ref(),
            &args.data_dir,
            &actor,
            &instance,
            &urls,
            anchor_out.as_deref(),
        ),
        RegistryCommand::Serve {
            listen,
            admin_listen,
            regenerate_every,
            conf_validity,
            timestamping_url,
        } => {
            let registry = open(keys.as_ref(), &args.data_dir)?;
            let config = ServeConfig {
                regenerate_every: Duration::from_secs(regenerate_every),
                conf_validity: Duration::from_secs(conf_validity),
                timestamping_url,
            };
            let admin_key = signer_or_generate(keys.as_ref(), ADMIN_TLS_KEY_LABEL)?;
            serve(
                registry,
                config,
                listen,
                admin_listen,
                admin_key,
                &args.data_dir,
            )
        }
        RegistryCommand::Show => {
            let registry = open(keys.as_ref(), &args.data_dir)?;
            let signed = registry
                .generate(now, DEFAULT_CONF_VALIDITY)
                .map_err(refused)?;
            print_conf(&conf::parse_unverified(signed.document()).map_err(refused)?)
        }
        RegistryCommand::Audit => {
            let registry = open(keys.as_ref(), &args.data_dir)?;
            for entry in registry.audit_log(1, usize::MAX).map_err(refused)? {
                println!(
                    "{}\t{}\t{}\t{}",
                    entry.seq, entry.at, entry.actor, entry.action
                );
            }
            Ok(())
        }
        ref command => {
            let operation = operation(command)?
                .ok_or(Error::Unreachable("every other verb is an operation"))?;
            let registry = open(keys.as_ref(), &args.data_dir)?;
            print_outcome(&operation.apply(&registry, &actor, now).map_err(refused)?);
            Ok(())
        }
    }
}

/// The operation a verb stands for; `None` for verbs that are not one (init, serve, show, audit).
fn operation(command: &RegistryCommand) -> Result<Option<Operation>, Error> {
    let read_text = |path: &Path| -> Result<String, Error> {
        let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            // DER: wrap it, so that one JSON field carries either form.
            Err(e) => backbone_hsm::cert::pem("CERTIFICATE REQUEST", e.as_bytes()),
        })
    };
    Ok(Some(match command {
        RegistryCommand::Init { .. }
        | RegistryCommand::Serve { .. }
        | RegistryCommand::Show
        | RegistryCommand::Audit => return Ok(None),
        RegistryCommand::AddMemberClass { code, description } => Operation::AddMemberClass {
            code: code.clone(),
            description: description.clone(),
        },
        RegistryCommand::AddMember { id, name } => Operation::AddMember {
            id: id.clone(),
            name: name.clone(),
        },
        RegistryCommand::AddSubsystem { id } => Operation::AddSubsystem { id: id.clone() },
        RegistryCommand::AddGateway { id, address } => Operation::AddGateway {
            id: id.clone(),
            address: address.clone(),
        },
        RegistryCommand::IssueTlsCert { gateway, csr } => Operation::IssueTlsCertificate {
            gateway: gateway.clone(),
            csr_pem: read_text(csr)?,
        },
        RegistryCommand::IssueSigningCert { member, csr } => Operation::IssueSigningCertificate {
            member: member.clone(),
            csr_pem: read_text(csr)?,
        },
        RegistryCommand::Revoke { serial, reason } => {
            let reason: RevocationReason =
                serde_json::from_value(serde_json::Value::String(reason.clone()))
                    .map_err(|_| Error::Usage(format!("unknown revocation reason {reason:?}")))?;
            Operation::Revoke {
                serial: serial.clone(),
                reason,
            }
        }
        RegistryCommand::AddService {
            id,
            description,
            personal_health_data,
        } => Operation::AddService {
            id: id.clone(),
            description: description.clone(),
            personal_health_data: *personal_health_data,
        },
        RegistryCommand::AddGroup { id, description } => Operation::AddGroup {
            id: id.clone(),
            description: description.clone(),
        },
        RegistryCommand::AddGroupMember { group, client } => Operation::AddGroupMember {
            group: group.clone(),
            client: client.clone(),
        },
        RegistryCommand::AddTimestampingService {
            name,
            aggregator_url,
            extender_url,
            publications_url,
            publication_cert,
        } => Operation::AddTimestampingService {
            name: name.clone(),
            aggregator_url: aggregator_url.clone(),
            extender_url: extender_url.clone(),
            publications_url: publications_url.clone(),
            publication_certificate_pem: std::fs::read_to_string(publication_cert)
                .map_err(Error::io("read", publication_cert))?,
        },
        RegistryCommand::AddAdmin { name, csr } => Operation::AddAdmin {
            name: name.clone(),
            csr_pem: read_text(csr)?,
        },
    }))
}

/// Sends the verb to a running registry's admin API.
fn remote(args: &RegistryArgs, keys: &dyn KeyStore, address: SocketAddr) -> Result<(), Error> {
    let (Some(label), Some(cert), Some(server)) =
        (&args.admin_key, &args.admin_cert, &args.registry_cert)
    else {
        return Err(Error::Usage(
            "--admin needs --admin-key, --admin-cert and --registry-cert".to_owned(),
        ));
    };
    let signer = keys.signer(label, None).map_err(Error::hsm(format!(
        "cannot open key '{label}' in {}",
        keys.describe()
    )))?;
    let client = AdminClient::new(
        address,
        signer,
        pem_certificate(cert)?,
        pem_certificate(server)?,
    )
    .map_err(refused)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("start the runtime for", "registry admin client"))?;
    let remote_error = |e: ClientError| match e {
        ClientError::Refused { .. } => Error::Usage(e.to_string()),
        ClientError::Failed(_) => Error::Check(format!("admin API at {address}: {e}")),
    };
    match &args.command {
        RegistryCommand::Init { .. } | RegistryCommand::Serve { .. } => Err(Error::Usage(
            "init and serve run on the registry host, without --admin".to_owned(),
        )),
        RegistryCommand::Show => print_conf(
            &runtime
                .block_on(client.conf_preview())
                .map_err(remote_error)?,
        ),
        RegistryCommand::Audit => {
            for entry in runtime
                .block_on(client.audit(1, backbone_registry::admin::MAX_AUDIT_PAGE))
                .map_err(remote_error)?
            {
                println!(
                    "{}\t{}\t{}\t{}",
                    entry.seq, entry.at, entry.actor, entry.action
                );
            }
            Ok(())
        }
        command => {
            let operation = operation(command)?
                .ok_or(Error::Unreachable("every other verb is an operation"))?;
            print_outcome(
                &runtime
                    .block_on(client.apply(&operation))
                    .map_err(remote_error)?,
            );
            Ok(())
        }
    }
}

fn print_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Done => eprintln!("done"),
        Outcome::Certificate {
            serial,
            certificate_pem,
        } => {
            print!("{certificate_pem}");
            eprintln!("issued certificate serial {serial}");
        }
    }
}

fn print_conf(conf: &GlobalConf) -> Result<(), Error> {
    println!(
        "{}",
        serde_json::to_string_pretty(conf).map_err(|_| Error::Unreachable("conf serialises"))?
    );
    Ok(())
}

/// The DER of the first certificate in a PEM file.
fn pem_certificate(path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
    openssl::x509::X509::from_pem(&bytes)
        .and_then(|c| c.to_der())
        .map_err(|e| Error::Usage(format!("{}: not a PEM certificate: {e}", path.display())))
}

fn signer_or_generate(keys: &dyn KeyStore, label: &str) -> Result<Arc<dyn Signer>, Error> {
    if keys.public_key(label).is_err() {
        keys.generate(label, KeyType::EcP256)
            .map_err(Error::hsm(format!(
                "cannot generate key '{label}' in {}",
                keys.describe()
            )))?;
    }
    keys.signer(label, None).map_err(Error::hsm(format!(
        "cannot open key '{label}' in {}",
        keys.describe()
    )))
}

fn init(
    keys: &dyn KeyStore,
    data_dir: &Path,
    actor: &str,
    instance: &str,
    urls: &[String],
    anchor_out: Option<&Path>,
) -> Result<(), Error> {
    let instance = InstanceId::new(instance).map_err(refused)?;
    let urls = if urls.is_empty() {
        vec!["http://127.0.0.1:8080/globalconf".to_owned()]
    } else {
        urls.to_vec()
    };
    for label in [CA_KEY_LABEL, CONF_KEY_LABEL] {
        keys.generate(label, KeyType::EcP256)
            .map_err(Error::hsm(format!(
                "cannot generate key '{label}' in {}",
                keys.describe()
            )))?;
    }
    let (ca, conf_key) = signers(keys)?;
    backbone_hsm::private::create_dir(data_dir).map_err(Error::io("create", data_dir))?;
    let store = Arc::new(
        RocksStore::open(data_dir).map_err(|e| Error::Check(format!("registry store: {e}")))?,
    );
    let registry = Registry::create(
        store,
        instance.clone(),
        ca,
        conf_key.clone(),
        actor,
        SystemTime::now(),
    )
    .map_err(refused)?;
    let anchor = Anchor::new(
        instance.clone(),
        conf_key.algorithm(),
        conf_key.public_key().clone(),
        urls,
    )
    .map_err(refused)?;
    let anchor_path = anchor_out.map_or_else(|| data_dir.join("anchor.json"), Path::to_owned);
    std::fs::write(&anchor_path, anchor.encode()).map_err(Error::io("write", &anchor_path))?;
    let ca_path = data_dir.join(CA_CERT_FILE);
    std::fs::write(
        &ca_path,
        backbone_hsm::cert::pem("CERTIFICATE", registry.ca_certificate().der()),
    )
    .map_err(Error::io("write", &ca_path))?;
    signer_or_generate(keys, ADMIN_TLS_KEY_LABEL)?;
    println!("created instance {instance} in {}", data_dir.display());
    println!(
        "CA certificate serial {}",
        registry.ca_certificate().serial()
    );
    println!(
        "configuration anchor: {} (key fingerprint {})",
        anchor_path.display(),
        conf_key.public_key().fingerprint()
    );
    Ok(())
}

fn open(keys: &dyn KeyStore, data_dir: &Path) -> Result<Registry, Error> {
    let (ca, conf_key) = signers(keys)?;
    let store = Arc::new(
        RocksStore::open(data_dir).map_err(|e| Error::Check(format!("registry store: {e}")))?,
    );
    Registry::open(store, ca, conf_key).map_err(refused)
}

fn signers(keys: &dyn KeyStore) -> Result<(Arc<dyn Signer>, Arc<dyn Signer>), Error> {
    let open = |label: &str| {
        keys.signer(label, None).map_err(Error::hsm(format!(
            "cannot open key '{label}' in {}",
            keys.describe()
        )))
    };
    Ok((open(CA_KEY_LABEL)?, open(CONF_KEY_LABEL)?))
}

fn serve(
    registry: Registry,
    config: ServeConfig,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    admin_key: Arc<dyn Signer>,
    data_dir: &Path,
) -> Result<(), Error> {
    config.check().map_err(refused)?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(Error::io("start the runtime for", "registry serve"))?;
    runtime.block_on(async move {
        let registry = Arc::new(registry);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Admin {
                addr: listen,
                source,
            })?;
        let admin_listener =
            tokio::net::TcpListener::bind(admin_listen)
                .await
                .map_err(|source| Error::Admin {
                    addr: admin_listen,
                    source,
                })?;
        let admin = AdminServer::spawn(registry.clone(), admin_key, admin_listener)
            .await
            .map_err(refused)?;
        let cert_path = data_dir.join(ADMIN_CERT_FILE);
        std::fs::write(
            &cert_path,
            backbone_hsm::cert::pem("CERTIFICATE", admin.certificate().der()),
        )
        .map_err(Error::io("write", &cert_path))?;
        let server = Server::spawn(registry, config, listener)
            .await
            .map_err(refused)?;
        println!("serving the global configuration at {}", server.url());
        println!(
            "admin API at {} (certificate {})",
            admin.local_addr(),
            cert_path.display()
        );
        shutdown_signal().await;
        admin.shutdown().await;
        server.shutdown().await;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
}

/// Registry errors the operator acts on exit 64; the rest exit 1.
fn refused(e: backbone_registry::Error) -> Error {
    use backbone_registry::Error as R;
    match e {
        R::InvalidId { .. }
        | R::Duplicate { .. }
        | R::NotFound { .. }
        | R::Refused(_)
        | R::Csr(_)
        | R::Decode { .. } => Error::Usage(e.to_string()),
        other => Error::Check(other.to_string()),
    }
}
