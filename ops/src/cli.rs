//! The command line: `backbone <noun> <verb>`, parsed with clap, and the dispatch to each command.
//!
//! Every command loads the layered configuration first ([`crate::config::load`]); configuration
//! problems end the process with exit code 64 before anything is opened or bound.

use std::path::PathBuf;

use backbone_hsm::KeyType;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, ConfigError, Env, PinSource, Problem, Settings, keys};
use crate::{Error, demo, hsm};

/// Backbone: national e-health data exchange. Every service and tool is a subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "backbone",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// TOML configuration file. Default: none, so built-in defaults apply, then BACKBONE_*
    /// environment variables override both (see `backbone config keys`).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The nouns.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check and show the configuration.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage and test keys in the configured key store (software keys or a PKCS#11 HSM).
    Hsm(HsmArgs),
    /// Run a whole e-health backbone on this machine: registry, timestamping, agencies' gateways
    /// and FHIR services, realistic traffic, and a summary of what to verify.
    Demo(demo::DemoArgs),
    /// Run the keyless timestamping service (KSI format).
    Timestamping(crate::timestamping::TimestampingArgs),
    /// Sign with a timestamping service, or verify a KSI signature offline.
    Ksi(crate::ksi::KsiArgs),
    /// Administer the registry: instance, members, certificates, the global configuration.
    Registry(crate::registry::RegistryArgs),
    /// Run an agency's gateway (security server) and manage its access rights.
    Gateway(crate::gateway::GatewayArgs),
    /// Run the citizen portal: who accessed my health data, when and why, with proof.
    Portal(crate::portal::PortalArgs),
    /// Export a gateway's message log as archives for auditors, and verify them offline.
    Audit(crate::audit::AuditArgs),
    /// Load a service and report its rate and latency beside baselines (not a test).
    Bench(crate::bench::BenchArgs),
}

impl Command {
    /// `noun verb`, for logs and traces.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Config {
                command: ConfigCommand::Check,
            } => "config check",
            Command::Config {
                command: ConfigCommand::Keys,
            } => "config keys",
            Command::Hsm(args) => match args.command {
                HsmCommand::Keygen { .. } => "hsm keygen",
                HsmCommand::List => "hsm list",
                HsmCommand::Pubkey { .. } => "hsm pubkey",
                HsmCommand::Csr(_) => "hsm csr",
                HsmCommand::Selftest(_) => "hsm selftest",
            },
            Command::Demo(_) => "demo",
            Command::Timestamping(_) => "timestamping serve",
            Command::Ksi(args) => match args.command {
                crate::ksi::KsiCommand::Sign(_) => "ksi sign",
                crate::ksi::KsiCommand::Extend(_) => "ksi extend",
                crate::ksi::KsiCommand::Verify(_) => "ksi verify",
                crate::ksi::KsiCommand::TsaProof(_) => "ksi tsa-proof",
            },
            Command::Registry(args) => args.command.name(),
            Command::Gateway(args) => args.command.name(),
            Command::Portal(args) => args.command.name(),
            Command::Audit(args) => args.command.name(),
            Command::Bench(args) => args.command.name(),
        }
    }
}

/// `backbone config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and check the configuration, then print the effective configuration as TOML with the
    /// origin of each value. Exit 0 when valid, 64 with every problem otherwise.
    Check,
    /// List every configuration key with its environment variable, default and meaning.
    Keys,
}

/// `backbone hsm ...`
#[derive(Debug, Args)]
pub struct HsmArgs {
    /// File holding the token's user PIN. Default: the configured hsm.pin_file, else the
    /// environment variable named by hsm.pin_env (BACKBONE_HSM_PIN). Not needed for software keys.
    #[arg(long, global = true, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,

    /// The verb.
    #[command(subcommand)]
    pub command: HsmCommand,
}

/// The verbs of `backbone hsm`.
#[derive(Debug, Subcommand)]
pub enum HsmCommand {
    /// Generate a key pair in the store; never overwrites an existing label. Prints the public
    /// key's fingerprint.
    Keygen {
        /// Label of the new key (1-64 characters of A-Z a-z 0-9 . _ -).
        #[arg(long)]
        label: String,
        /// Key type: ec-p256, ed25519, rsa2048 or rsa3072. The default, ec-p256, is what HSMs
        /// sign fastest.
        #[arg(long, default_value = "ec-p256")]
        key_type: KeyType,
    },
    /// List the keys in the store: label, type and SHA-256 fingerprint of the public key.
    List,
    /// Print the public key of one key as PEM (SubjectPublicKeyInfo) on standard output.
    Pubkey {
        /// Label of the key.
        #[arg(long)]
        label: String,
    },
    /// Write a PKCS#10 certificate signing request signed by the key in the store.
    Csr(hsm::CsrArgs),
    /// Check the store end to end: generate (or reuse) a key per key type, sign, verify, time
    /// signatures, batch-sign a burst and verify every proof. Prints each step with timings.
    Selftest(hsm::SelftestArgs),
}

/// Runs the parsed command line. Output goes to standard output, logs to standard error.
///
/// # Errors
///
/// Every failure, for `main` to report; [`Error::exit_code`] gives the exit code.
pub fn run(cli: Cli, env: &Env) -> Result<(), Error> {
    if let Command::Config {
        command: ConfigCommand::Keys,
    } = &cli.command
    {
        print!("{}", key_table());
        return Ok(());
    }
    let settings = config::load(cli.config.as_deref(), env)?;
    let telemetry = crate::telemetry::init(&settings.telemetry)?;
    if telemetry.exporting() {
        tracing::info!(config = %settings.summary(), "exporting traces over OTLP");
    }
    // One root span per command: with OTLP on, every command run is one trace.
    let span = tracing::info_span!(
        "backbone",
        command = cli.command.name(),
        version = crate::telemetry::VERSION
    );
    let _entered = span.enter();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(&settings, env),
        Command::Config {
            command: ConfigCommand::Keys,
        } => Ok(()),
        Command::Hsm(args) => hsm::run(args, &settings, env),
        Command::Demo(args) => demo::run(&args, &settings, env),
        Command::Timestamping(args) => crate::timestamping::run(args, &settings, env),
        Command::Ksi(args) => crate::ksi::run(args),
        Command::Registry(args) => crate::registry::run(args, &settings, env),
        Command::Gateway(args) => crate::gateway::run(args, &settings, env),
        Command::Portal(args) => crate::portal::run(args, &settings, env),
        Command::Audit(args) => crate::audit::run(args, &settings, env),
        Command::Bench(args) => crate::bench::run(&args),
    }
}

fn config_check(settings: &Settings, env: &Env) -> Result<(), Error> {
    print!("{}", settings.to_toml());
    if let backbone_hsm::config::Config::Pkcs11(p) = &settings.hsm.store {
        // The token cannot be opened without its PIN: check that it is there, without showing it.
        let key = match settings.hsm.pin {
            PinSource::File(_) => keys::HSM_PIN_FILE,
            PinSource::Env(_) => keys::HSM_PIN_ENV,
        };
        if let Err(source) = settings.hsm.pin.read(env) {
            let problem = Problem {
                key: key.path.to_owned(),
                value: None,
                origin: settings.origin(&key).clone(),
                reason: format!(
                    "the user PIN of token '{}' is not available: {source}",
                    p.token_label
                ),
            };
            return Err(Error::Config(ConfigError::Invalid(vec![problem])));
        }
        println!("# the user PIN is available from {}", settings.hsm.pin);
    }
    eprintln!("configuration is valid");
    Ok(())
}

fn key_table() -> String {
    let mut out = String::new();
    for key in keys::ALL {
        let default = key
            .default
            .map_or_else(|| "(none)".to_owned(), |d| format!("{d:?}"));
        out.push_str(&format!(
            "{}\n    env: {}\n    default: {default}\n    {}\n",
            key.path, key.env, key.doc
        ));
    }
    out
}
