//! `backbone gateway init|serve|grant|revoke|rights`: an agency's security server.
//!
//! ```text
//!  init:  key store ─▶ gateway-tls, member-signing, gateway-log-key ─▶ DATA_DIR/tls-csr.pem, signing-csr.pem
//!         (the registry issues the certificates: `backbone registry issue-tls-cert` / `issue-signing-cert`)
//!  serve: anchor ─▶ ConfClient (DATA_DIR/globalconf.cache) ─▶ refreshed from the registry
//!         key store ─▶ TLS key · batch signer · log data key ─▶ MessageLog (DATA_DIR/log, stamped)
//!         ─▶ client interface (--client-listen) · peer interface (--peer-listen)
//!  grant/revoke/rights: DATA_DIR/access-rights.json, picked up by a running gateway within a second
//!  add-client-cert/remove-client-cert/set-connection/clients: DATA_DIR/information-systems.json,
//!         picked up the same way (or, with --admin, through a running gateway's admin API)
//!  system-cert: an information system's key in the key store and its self-signed certificate
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_gateway::access::{Grant, Grantee};
use backbone_gateway::admin::client::{AdminClient, ClientError};
use backbone_gateway::admin::{AdminServer, Admins, certificate_der};
use backbone_gateway::conf::Trust;
use backbone_gateway::log::{LogConfig, LogMetrics, MessageLog};
use backbone_gateway::rights::RightsStore;
use backbone_gateway::service::{GatewayConfig, GatewayKeys, RunningGateway, SYSTEMS_FILE};
use backbone_gateway::systems::{Connection, Listed, SystemsError, SystemsStore};
use backbone_hsm::KeyStore;
use backbone_hsm::batch::BatchSigner;
use backbone_hsm::cert::{Subject, csr_pem};
use backbone_registry::anchor::Anchor;
use backbone_registry::client::fetch::{self, FetchConfig};
use backbone_registry::client::{ClientConfig, ConfClient};
use clap::{Args, Subcommand};

use crate::Error;
use crate::config::{Env, Settings};
use crate::hsm::{key_or_generate, open_store, pin_source};

/// Label of the gateway's TLS key in the key store.
pub const TLS_KEY_LABEL: &str = "gateway-tls";
/// Label of the member's message signing key in the key store.
pub const SIGNING_KEY_LABEL: &str = "member-signing";
/// Label of the key that wraps the message log's data key.
pub const LOG_KEY_LABEL: &str = "gateway-log-key";
/// The access rights file in the data directory.
pub const RIGHTS_FILE: &str = "access-rights.json";
/// The cached global configuration in the data directory.
pub const CONF_CACHE_FILE: &str = "globalconf.cache";
/// The administrators' certificates, in the data directory.
pub const ADMINS_DIR: &str = "admins";
/// The admin API's certificate (the gateway's TLS certificate), written at start for
/// administrators to pin.
pub const ADMIN_CERT_FILE: &str = "admin-api-cert.pem";
/// The gateway's TLS certificate, written at start for information systems to pin: the client
/// port's server certificate.
pub const TLS_CERT_FILE: &str = "tls-cert.pem";

/// `backbone gateway ...`
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The gateway's directory: message log, access rights, configuration cache. Default:
    /// backbone-gateway.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "backbone-gateway"
    )]
    pub data_dir: PathBuf,
    /// File holding the token's user PIN. Default: the configured hsm.pin_file or hsm.pin_env.
    #[arg(long, global = true, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Send grant, revoke, rights or the information-system verbs to the admin API of a running
    /// gateway at HOST:PORT instead of editing its files. Needs --admin-key, --admin-cert and --gateway-cert.
    #[arg(long, global = true, value_name = "HOST:PORT", requires_all = ["admin_key", "admin_cert", "gateway_cert"])]
    pub admin: Option<SocketAddr>,
    /// Label of the administrator's key in the key store.
    #[arg(long, global = true, value_name = "LABEL")]
    pub admin_key: Option<String>,
    /// The administrator's certificate (PEM), from `admin-cert`.
    #[arg(long, global = true, value_name = "FILE")]
    pub admin_cert: Option<PathBuf>,
    /// The gateway's admin API certificate (DATA_DIR/admin-api-cert.pem of the gateway), the
    /// only server certificate accepted.
    #[arg(long, global = true, value_name = "FILE")]
    pub gateway_cert: Option<PathBuf>,
    /// The verb.
    #[command(subcommand)]
    pub command: GatewayCommand,
}

/// The verbs of `backbone gateway`.
#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Create the gateway's keys in the key store and write certificate requests for the registry.
    Init {
        /// The gateway id, INSTANCE/CLASS/MEMBER/SERVERCODE.
        #[arg(long)]
        id: String,
    },
    /// Run the gateway.
    Serve(Box<ServeArgs>),
    /// Grant a client or a global group access to a service (method and path pattern).
    Grant(GrantArgs),
    /// Remove a grant.
    Revoke(GrantArgs),
    /// List the grants.
    Rights,
    /// Make an administrator's key in the key store (if missing) and a self-signed certificate
    /// for it, to be added to gateways with `add-admin`.
    AdminCert {
        /// The administrator's name, e.g. mari.maasikas.
        #[arg(long)]
        name: String,
        /// Label of the administrator's key in the key store.
        #[arg(long, default_value = "gateway-admin")]
        key: String,
        /// Where to write the certificate (PEM).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Let the holder of CERT use this gateway's admin API as NAME (DATA_DIR/admins/NAME.pem;
    /// delete the file to lock them out).
    AddAdmin {
        /// The administrator's name: letters, digits, '.', '-', '_'.
        name: String,
        /// Their certificate (PEM), from `admin-cert`.
        cert: PathBuf,
    },
    /// Make an information system's key in the key store (if missing) and a self-signed TLS
    /// client certificate for it, to be registered with `add-client-cert`.
    SystemCert {
        /// The system's name in the certificate, e.g. its client id.
        #[arg(long)]
        name: String,
        /// Label of the system's key in the key store.
        #[arg(long, default_value = "information-system")]
        key: String,
        /// Where to write the certificate (PEM).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Register CERT as a TLS client certificate of CLIENT (member or subsystem) on the client
    /// port: a connection presenting it may name CLIENT as X-Road-Client.
    AddClientCert {
        /// The client, INSTANCE/CLASS/MEMBER[/SUBSYSTEM].
        client: String,
        /// The information system's certificate (PEM or DER).
        cert: PathBuf,
    },
    /// Remove CLIENT's certificate whose SHA-256 (as `clients` lists it) is SHA256.
    RemoveClientCert {
        /// The client.
        client: String,
        /// The certificate's SHA-256, hex.
        sha256: String,
    },
    /// Set how CLIENT must connect: https (a registered client certificate; the default),
    /// https-no-auth (TLS, no certificate), or http (plain HTTP too, on --client-plain-listen,
    /// which is loopback only).
    SetConnection {
        /// The client.
        client: String,
        /// https, https-no-auth or http.
        connection: String,
    },
    /// List the clients with settings: connection type and certificates.
    Clients,
}

/// Flags of `backbone gateway serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The gateway id, INSTANCE/CLASS/MEMBER/SERVERCODE, as registered.
    #[arg(long)]
    pub id: String,
    /// The configuration anchor file from the registry.
    #[arg(long, value_name = "FILE")]
    pub anchor: PathBuf,
    /// Where information systems connect: HTTPS with the gateway's TLS certificate
    /// (DATA_DIR/tls-cert.pem), each system authenticated as its connection type says.
    #[arg(long, default_value = "127.0.0.1:8280")]
    pub client_listen: SocketAddr,
    /// Where information systems allowed plain HTTP (`set-connection CLIENT http`) connect; a
    /// loopback address only. Default: no plain listener.
    #[arg(long, value_name = "HOST:PORT")]
    pub client_plain_listen: Option<SocketAddr>,
    /// Where other gateways connect (TLS 1.3, pinned); the address registered for this gateway.
    #[arg(long, default_value = "127.0.0.1:8243")]
    pub peer_listen: SocketAddr,
    /// A service this gateway provides: SERVICE_ID=URL, e.g.
    /// EE/GOV/70000001/ehr/patients=http://127.0.0.1:9000/fhir. Repeat for each.
    #[arg(long = "service", value_name = "ID=URL")]
    pub services: Vec<String>,
    /// The CA certificates (PEM file) that `https://` local services' certificates must chain
    /// to; the gateway connects with TLS 1.3 and presents its own TLS certificate when asked.
    /// Default: none (only http:// services).
    #[arg(long, value_name = "PEM")]
    pub service_ca: Option<PathBuf>,
    /// The timestamping service's address (HOST:PORT). Default: the first approved timestamping
    /// service of the global configuration.
    #[arg(long, value_name = "HOST:PORT")]
    pub timestamping: Option<SocketAddr>,
    /// Milliseconds between message-log timestamping batches.
    #[arg(long, default_value_t = 2000)]
    pub batch_interval_ms: u64,
    /// Seconds timestamping may fail before new exchanges are refused.
    #[arg(long, default_value_t = 60)]
    pub max_timestamping_failure: u64,
    /// Largest request or response body, bytes.
    #[arg(long, default_value_t = backbone_gateway::service::DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Seconds a peer gateway or a local service has to answer.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Where the HTTPS admin API listens (administrators in DATA_DIR/admins).
    #[arg(long, default_value = "127.0.0.1:8244")]
    pub admin_listen: SocketAddr,
}

/// A grant on the command line.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// The service, INSTANCE/CLASS/MEMBER/SUBSYSTEM/CODE.
    pub service: String,
    /// The client (member or subsystem) granted.
    #[arg(long, conflicts_with = "group", required_unless_present = "group")]
    pub client: Option<String>,
    /// The global group granted, INSTANCE/CODE.
    #[arg(long)]
    pub group: Option<String>,
    /// The HTTP method, or * for any.
    #[arg(long, default_value = "*")]
    pub method: String,
    /// The path pattern: * is one segment, ** any number.
    #[arg(long, default_value = "/**")]
    pub path: String,
}

impl GatewayCommand {
    /// The verb's name, for spans.
    pub fn name(&self) -> &'static str {
        match self {
            GatewayCommand::Init { .. } => "gateway init",
            GatewayCommand::Serve(_) => "gateway serve",
            GatewayCommand::Grant(_) => "gateway grant",
            GatewayCommand::Revoke(_) => "gateway revoke",
            GatewayCommand::Rights => "gateway rights",
            GatewayCommand::AdminCert { .. } => "gateway admin-cert",
            GatewayCommand::AddAdmin { .. } => "gateway add-admin",
            GatewayCommand::SystemCert { .. } => "gateway system-cert",
            GatewayCommand::AddClientCert { .. } => "gateway add-client-cert",
            GatewayCommand::RemoveClientCert { .. } => "gateway remove-client-cert",
            GatewayCommand::SetConnection { .. } => "gateway set-connection",
            GatewayCommand::Clients => "gateway clients",
        }
    }
}

/// Runs one `backbone gateway` verb.
///
/// # Errors
///
/// Bad ids, grants and configuration exit 64; key store, storage and network failures exit 1.
pub fn run(args: GatewayArgs, settings: &Settings, env: &Env) -> Result<(), Error> {
    if let Some(address) = args.admin {
        let keys = open_store(
            &settings.hsm.store,
            &pin_source(args.pin_file.as_deref(), settings),
            env,
        )?;
        return remote(&args, keys.as_ref(), address);
    }
    match &args.command {
        GatewayCommand::Init { id } => {
            let keys = open_store(
                &settings.hsm.store,
                &pin_source(args.pin_file.as_deref(), settings),
                env,
            )?;
            init(keys.as_ref(), &args.data_dir, id)
        }
        GatewayCommand::Serve(serve_args) => {
            let keys = open_store(
                &settings.hsm.store,
                &pin_source(args.pin_file.as_deref(), settings),
                env,
            )?;
            serve(keys, &args.data_dir, serve_args)
        }
        GatewayCommand::Grant(grant) => {
            let changed = rights(&args.data_dir)?
                .grant(parse_grant(grant)?)
                .map_err(|e| Error::Check(e.to_string()))?;
            say_changed(changed, "granted", "already granted");
            Ok(())
        }
        GatewayCommand::Revoke(grant) => {
            let changed = rights(&args.data_dir)?
                .revoke(&parse_grant(grant)?)
                .map_err(|e| Error::Check(e.to_string()))?;
            say_changed(changed, "revoked", "no such grant");
            Ok(())
        }
        GatewayCommand::Rights => {
            for grant in rights(&args.data_dir)?.snapshot().grants() {
                let who = match &grant.grantee {
                    Grantee::Client(c) => format!("client {c}"),
                    Grantee::Group(g) => format!("group {g}"),
                };
                println!("{}\t{who}\t{}\t{}", grant.service, grant.method, grant.path);
            }
            Ok(())
        }
        GatewayCommand::AdminCert { name, key, out } => {
            let keys = open_store(
                &settings.hsm.store,
                &pin_source(args.pin_file.as_deref(), settings),
                env,
            )?;
            make_certificate(keys.as_ref(), name, key, out)
        }
        GatewayCommand::AddAdmin { name, cert } => add_admin(&args.data_dir, name, cert),
        GatewayCommand::SystemCert { name, key, out } => {
            let keys = open_store(
                &settings.hsm.store,
                &pin_source(args.pin_file.as_deref(), settings),
                env,
            )?;
            make_certificate(keys.as_ref(), name, key, out)
        }
        GatewayCommand::AddClientCert { client, cert } => {
            let changed = systems(&args.data_dir)?
                .add_certificate(&parse_client(client)?, &read_certificate(cert)?)
                .map_err(systems_failed)?;
            say_changed(changed, "added", "already registered");
            Ok(())
        }
        GatewayCommand::RemoveClientCert { client, sha256 } => {
            let changed = systems(&args.data_dir)?
                .remove_certificate(&parse_client(client)?, sha256)
                .map_err(systems_failed)?;
            say_changed(changed, "removed", "no such certificate");
            Ok(())
        }
        GatewayCommand::SetConnection { client, connection } => {
            let connection: Connection = connection.parse().map_err(Error::Usage)?;
            let changed = systems(&args.data_dir)?
                .set_connection(&parse_client(client)?, connection)
                .map_err(systems_failed)?;
            say_changed(changed, "set", "unchanged");
            Ok(())
        }
        GatewayCommand::Clients => {
            print_clients(&systems(&args.data_dir)?.snapshot().list());
            Ok(())
        }
    }
}

/// Says whether a change was made: `done` if so, `unchanged` if there was nothing to do.
fn say_changed(changed: bool, done: &str, unchanged: &str) {
    println!("{}", if changed { done } else { unchanged });
}

fn systems(data_dir: &Path) -> Result<SystemsStore, Error> {
    backbone_hsm::private::create_dir(data_dir).map_err(Error::io("create", data_dir))?;
    SystemsStore::open(data_dir.join(SYSTEMS_FILE)).map_err(|e| Error::Check(e.to_string()))
}

fn systems_failed(error: SystemsError) -> Error {
    match error {
        SystemsError::Invalid(message) => Error::Usage(message),
        SystemsError::Store(e) => Error::Check(e.to_string()),
    }
}

fn parse_client(client: &str) -> Result<backbone_registry::id::ClientId, Error> {
    client
        .parse()
        .map_err(|e: backbone_registry::Error| Error::Usage(e.to_string()))
}

fn read_certificate(path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
    certificate_der(&bytes)
        .ok_or_else(|| Error::Usage(format!("{}: not a certificate", path.display())))
}

fn print_clients(listed: &[Listed]) {
    for client in listed {
        println!("{}\t{}", client.client, client.connection);
        for certificate in &client.certificates {
            println!(
                "  {}\t{}\tuntil {}",
                certificate.sha256, certificate.subject, certificate.not_after
            );
        }
    }
}

/// A verb sent to a running gateway's admin API.
fn remote(args: &GatewayArgs, keys: &dyn KeyStore, address: SocketAddr) -> Result<(), Error> {
    let (Some(label), Some(cert), Some(gateway_cert)) =
        (&args.admin_key, &args.admin_cert, &args.gateway_cert)
    else {
        return Err(Error::Usage(
            "--admin needs --admin-key, --admin-cert and --gateway-cert".into(),
        ));
    };
    let key = keys.signer(label, None).map_err(Error::hsm(format!(
        "cannot open key '{label}' in {}",
        keys.describe()
    )))?;
    let client = AdminClient::new(
        address,
        key,
        read_certificate(cert)?,
        read_certificate(gateway_cert)?,
    )
    .map_err(|e| Error::Check(e.to_string()))?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(Error::io("start the runtime for", "gateway admin"))?;
    let failed = |e: ClientError| match e {
        ClientError::Refused { .. } => Error::Usage(e.to_string()),
        ClientError::Failed(_) => Error::Check(e.to_string()),
    };
    runtime.block_on(async {
        match &args.command {
            GatewayCommand::Grant(grant) => {
                let changed = client.grant(&parse_grant(grant)?).await.map_err(failed)?;
                say_changed(changed, "granted", "already granted");
            }
            GatewayCommand::Revoke(grant) => {
                let changed = client.revoke(&parse_grant(grant)?).await.map_err(failed)?;
                say_changed(changed, "revoked", "no such grant");
            }
            GatewayCommand::Rights => {
                for grant in client.rights().await.map_err(failed)? {
                    println!(
                        "{}\t{:?}\t{}\t{}",
                        grant.service, grant.grantee, grant.method, grant.path
                    );
                }
            }
            GatewayCommand::AddClientCert { client: id, cert } => {
                parse_client(id)?;
                let changed = client
                    .add_client_certificate(id, &read_certificate(cert)?)
                    .await
                    .map_err(failed)?;
                say_changed(changed, "added", "already registered");
            }
            GatewayCommand::RemoveClientCert { client: id, sha256 } => {
                parse_client(id)?;
                let changed = client
                    .remove_client_certificate(id, sha256)
                    .await
                    .map_err(failed)?;
                say_changed(changed, "removed", "no such certificate");
            }
            GatewayCommand::SetConnection {
                client: id,
                connection,
            } => {
                parse_client(id)?;
                let connection: Connection = connection.parse().map_err(Error::Usage)?;
                let changed = client
                    .set_connection(id, connection)
                    .await
                    .map_err(failed)?;
                say_changed(changed, "set", "unchanged");
            }
            GatewayCommand::Clients => print_clients(&client.clients().await.map_err(failed)?),
            _ => {
                return Err(Error::Usage(
                    "only grant, revoke, rights and the client verbs go to the admin API".into(),
                ));
            }
        }
        Ok(())
    })
}

fn make_certificate(keys: &dyn KeyStore, name: &str, label: &str, out: &Path) -> Result<(), Error> {
    let (key, _) = key_or_generate(keys, label)?;
    let der = backbone_hsm::cert::self_signed_certificate(
        key.as_ref(),
        name,
        Duration::from_secs(2 * 365 * 86_400),
    )
    .map_err(Error::hsm("cannot make the certificate".to_owned()))?;
    std::fs::write(out, backbone_hsm::cert::pem("CERTIFICATE", &der))
        .map_err(Error::io("write", out))?;
    println!(
        "wrote {} (key '{label}' in {})",
        out.display(),
        keys.describe()
    );
    Ok(())
}

fn add_admin(data_dir: &Path, name: &str, cert: &Path) -> Result<(), Error> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        || name.starts_with('.')
    {
        return Err(Error::Usage(format!(
            "administrator name {name:?}: 1–64 letters, digits, '.', '-' or '_', not starting with '.'"
        )));
    }
    let der = read_certificate(cert)?;
    let dir = data_dir.join(ADMINS_DIR);
    backbone_hsm::private::create_dir(&dir).map_err(Error::io("create", &dir))?;
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, backbone_hsm::cert::pem("CERTIFICATE", &der))
        .map_err(Error::io("write", &path))?;
    println!(
        "administrator {name} may use the admin API ({})",
        path.display()
    );
    Ok(())
}

fn rights(data_dir: &Path) -> Result<RightsStore, Error> {
    backbone_hsm::private::create_dir(data_dir).map_err(Error::io("create", data_dir))?;
    RightsStore::open(data_dir.join(RIGHTS_FILE)).map_err(|e| Error::Check(e.to_string()))
}

fn parse_grant(args: &GrantArgs) -> Result<Grant, Error> {
    let usage = |e: &dyn std::fmt::Display| Error::Usage(e.to_string());
    let service = args.service.parse().map_err(|e| usage(&e))?;
    let grantee = match (&args.client, &args.group) {
        (Some(client), None) => Grantee::Client(client.parse().map_err(|e| usage(&e))?),
        (None, Some(group)) => Grantee::Group(group.parse().map_err(|e| usage(&e))?),
        _ => {
            return Err(Error::Usage(
                "give exactly one of --client and --group".into(),
            ));
        }
    };
    Grant::new(service, grantee, &args.method, &args.path).map_err(|e| usage(&e))
}

fn init(keys: &dyn KeyStore, data_dir: &Path, id: &str) -> Result<(), Error> {
    let gateway: backbone_registry::id::GatewayId = id
        .parse()
        .map_err(|e: backbone_registry::Error| Error::Usage(e.to_string()))?;
    backbone_hsm::private::create_dir(data_dir).map_err(Error::io("create", data_dir))?;
    let (tls, _) = key_or_generate(keys, TLS_KEY_LABEL)?;
    let (signing, _) = key_or_generate(keys, SIGNING_KEY_LABEL)?;
    if keys.wrapper(LOG_KEY_LABEL).is_err() {
        keys.generate_wrapping_key(LOG_KEY_LABEL)
            .map_err(Error::hsm(format!(
                "cannot generate key '{LOG_KEY_LABEL}' in {}",
                keys.describe()
            )))?;
    }
    for (signer, common_name, file) in [
        (&tls, gateway.to_string(), "tls-csr.pem"),
        (&signing, gateway.owner().to_string(), "signing-csr.pem"),
    ] {
        let subject = Subject {
            common_name,
            ..Subject::default()
        };
        let csr = csr_pem(signer.as_ref(), &subject)
            .map_err(Error::hsm("cannot make a certificate request".to_owned()))?;
        let path = data_dir.join(file);
        std::fs::write(&path, csr).map_err(Error::io("write", &path))?;
        println!("wrote {}", path.display());
    }
    println!("next: have the registry issue them:");
    println!(
        "  backbone registry issue-tls-cert {gateway} {}",
        data_dir.join("tls-csr.pem").display()
    );
    println!(
        "  backbone registry issue-signing-cert {} {}",
        gateway.owner(),
        data_dir.join("signing-csr.pem").display()
    );
    Ok(())
}

fn serve(keys: Arc<dyn KeyStore>, data_dir: &Path, args: &ServeArgs) -> Result<(), Error> {
    let id: backbone_registry::id::GatewayId = args
        .id
        .parse()
        .map_err(|e: backbone_registry::Error| Error::Usage(e.to_string()))?;
    if let Some(plain) = args.client_plain_listen
        && !plain.ip().is_loopback()
    {
        return Err(Error::Usage(format!(
            "--client-plain-listen {plain}: plain HTTP for information systems is served only on a loopback address"
        )));
    }
    let anchor_bytes = std::fs::read(&args.anchor).map_err(Error::io("read", &args.anchor))?;
    let anchor = Anchor::decode(&anchor_bytes)
        .map_err(|e| Error::Usage(format!("{}: {e}", args.anchor.display())))?;
    backbone_hsm::private::create_dir(data_dir).map_err(Error::io("create", data_dir))?;
    let mut config = GatewayConfig::new(
        id.clone(),
        args.client_listen,
        args.peer_listen,
        data_dir.join(RIGHTS_FILE),
    );
    for service in &args.services {
        let (service_id, url) = service
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--service {service:?} is not ID=URL")))?;
        config
            .services
            .insert(service_id.to_owned(), url.to_owned());
    }
    config.client_plain_listen = args.client_plain_listen;
    config.service_ca.clone_from(&args.service_ca);
    config.max_body = args.max_body;
    config.timeout = Duration::from_secs(args.timeout);
    let tls = keys
        .signer(TLS_KEY_LABEL, None)
        .map_err(Error::hsm(format!(
            "cannot open key '{TLS_KEY_LABEL}' (run `backbone gateway init`)"
        )))?;
    let signing_key = keys
        .signer(SIGNING_KEY_LABEL, None)
        .map_err(Error::hsm(format!(
            "cannot open key '{SIGNING_KEY_LABEL}' (run `backbone gateway init`)"
        )))?;
    let wrapper = keys.wrapper(LOG_KEY_LABEL).map_err(Error::hsm(format!(
        "cannot open key '{LOG_KEY_LABEL}' (run `backbone gateway init`)"
    )))?;

    let runtime = tokio::runtime::Runtime::new()
        .map_err(Error::io("start the runtime for", "gateway serve"))?;
    runtime.block_on(async move {
        let conf = Arc::new(
            ConfClient::open(anchor, ClientConfig { cache_path: Some(data_dir.join(CONF_CACHE_FILE)), ..ClientConfig::default() })
                .map_err(|e| Error::Check(format!("configuration cache: {e}")))?,
        );
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| Error::Check(e.to_string()))?;
        if let Err(e) = fetch::refresh_once(&conf, &http, SystemTime::now()).await {
            if conf.current(SystemTime::now()).is_err() {
                return Err(Error::Check(format!("no usable global configuration: {e}")));
            }
            tracing::warn!(error = %e, "registry unreachable; serving from the cached configuration");
        }
        let current = conf.current(SystemTime::now()).map_err(|e| Error::Check(e.to_string()))?;
        let timestamping = match args.timestamping {
            Some(addr) => addr,
            None => timestamping_from_conf(&current)?,
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let refresher = tokio::spawn(fetch::run(Arc::clone(&conf), FetchConfig::default(), SystemTime::now, stopped));

        let log_config = LogConfig {
            dir: data_dir.join("log"),
            batch_interval: Duration::from_millis(args.batch_interval_ms.max(100)),
            max_timestamping_failure: Duration::from_secs(args.max_timestamping_failure),
            timestamping: Some(timestamping),
        };
        let metrics = prometheus::Registry::new();
        let log_metrics = LogMetrics::register(&metrics).map_err(|e| Error::Check(format!("metrics: {e}")))?;
        let log = Arc::new(MessageLog::open_with_metrics(log_config, wrapper, log_metrics).map_err(|e| Error::Check(format!("message log: {e}")))?);
        log.spawn_stamper();
        let hsm_metrics = backbone_hsm::Metrics::register(&metrics).map_err(|e| Error::Check(format!("metrics: {e}")))?;
        let signing = Arc::new(
            BatchSigner::with_metrics(signing_key, backbone_gateway::service::signer_config(), &hsm_metrics).map_err(Error::hsm("batch signer".to_owned()))?,
        );
        let trust = Trust::new(Arc::clone(&conf), id);
        let keys = GatewayKeys { tls, signing };
        let admin_key = Arc::clone(&keys.tls);
        let gateway = RunningGateway::start(config, trust, keys, Arc::clone(&log), metrics).await.map_err(|e| Error::Check(e.to_string()))?;
        let own_cert = current
            .gateway(gateway.id())
            .and_then(|g| g.tls_certificate.as_ref())
            .map(|c| c.der().to_vec())
            .ok_or_else(|| Error::Check("this gateway has no TLS certificate in the global configuration".into()))?;
        let cert_path = data_dir.join(ADMIN_CERT_FILE);
        let own_pem = backbone_hsm::cert::pem("CERTIFICATE", &own_cert);
        std::fs::write(&cert_path, &own_pem).map_err(Error::io("write", &cert_path))?;
        let tls_cert_path = data_dir.join(TLS_CERT_FILE);
        std::fs::write(&tls_cert_path, &own_pem).map_err(Error::io("write", &tls_cert_path))?;
        let admin_listener = tokio::net::TcpListener::bind(args.admin_listen).await.map_err(|source| Error::Admin { addr: args.admin_listen, source })?;
        let admin = AdminServer::spawn(admin_listener, admin_key, own_cert, Admins::new(data_dir.join(ADMINS_DIR)), &gateway, Arc::clone(&log), Arc::clone(&conf))
            .map_err(Error::Check)?;
        // A closed standard output (a supervisor that stopped reading) must not stop the gateway.
        let say = |line: String| {
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), "{line}");
        };
        say(format!("client interface on https://{} (certificate {})", gateway.client_addr(), tls_cert_path.display()));
        say(format!("peer interface on {}", gateway.peer_addr()));
        say(format!("admin API on {} (certificate {})", admin.local_addr(), cert_path.display()));
        if let Some(plain) = gateway.client_plain_addr() {
            say(format!("plain client interface on http://{plain}"));
        }
        crate::registry::shutdown_signal().await;
        admin.shutdown().await;
        gateway.shutdown().await;
        if let Err(e) = log.shutdown().await {
            tracing::warn!(error = %e, "the last records stay unstamped until the next start");
        }
        let _ = stop.send(true);
        let _ = refresher.await;
        Ok(())
    })
}

fn timestamping_from_conf(conf: &backbone_registry::GlobalConf) -> Result<SocketAddr, Error> {
    let service = conf
        .timestamping_services
        .first()
        .ok_or_else(|| Error::Usage("the global configuration approves no timestamping service; give --timestamping HOST:PORT".into()))?;
    let url = &service.aggregator_url;
    let authority = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    authority
        .parse()
        .map_err(|_| Error::Usage(format!("timestamping service {}: aggregator URL {url:?} is not http://IP:PORT/...; give --timestamping", service.name)))
}
