//! `backbone demo`: a whole national e-health backbone on this machine, in one process. The
//! registry, the timestamping service, and the gateways of a hospital, a family doctor, a
//! pharmacy, the Health Insurance Fund and the citizen portal's member start on 127.0.0.1; each
//! agency's FHIR R4 service serves synthetic people; the citizen portal runs behind its member's
//! gateway; realistic traffic runs through the gateways; and the summary says what was exchanged,
//! logged and timestamped, which commands verify it offline, and whom to sign in as at the portal.
//!
//! ```text
//!  seed ─▶ data (citizens, ICD-10/ATC/LOINC records) ─▶ fhir services
//!  keys (SoftHSM2 tokens or DIR/keys) ─▶ network: timestamping · registry ─▶ 5 gateways ─▶ portal
//!  traffic (referral, e-prescription, dispensing, claim, one emergency) ─▶ logs ─▶ stamps
//!  summary: exchanges.json · a KSI signature · an audit archive · commands · URLs · sign-in
//!  Ctrl-C ─▶ portal, gateways, logs, services, registry, timestamping stop in that order
//! ```
//!
//! Everything lives under one data directory; a second run reuses its keys, records and logs.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use backbone_gateway::log::archive::{self, Selection};
use backbone_gateway::usage::{UsageAnswer, hex, rfc3339};
use backbone_portal::oidc::provider::TestPerson;
use clap::Args;

use crate::Error;
use crate::config::{Env, Settings};

pub mod data;
pub mod fhir;
pub mod keys;
pub mod network;
pub mod portal;
pub mod traffic;

use self::data::Citizen;
use self::keys::{KeyChoice, Keys};
use self::network::{Agency, Network, Ports, Role};
use self::traffic::Traffic;

/// The default first port: registry 7400, timestamping 7401, gateways' client ports 7410–7414,
/// peer ports 7420–7424, FHIR services 7430–7433 (ops/prometheus.yml scrapes these), the citizen
/// portal 7440 and its test OpenID provider 7441.
pub const DEFAULT_BASE_PORT: u16 = 7400;

/// Flags of `backbone demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for everything the demo keeps (keys, registry, calendar, message logs, files it
    /// writes); created if missing, reused if present. Default: backbone-demo.
    #[arg(long, default_value = "backbone-demo", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// First port: registry at PORT, timestamping PORT+1, gateways' client ports (HTTP, /metrics)
    /// PORT+10.., their peer ports PORT+20.., FHIR services PORT+30.., the citizen portal PORT+40
    /// and its test OpenID provider PORT+41. 0 picks free ports (a later run keeps the peer ports
    /// registered by the first).
    #[arg(long, default_value_t = DEFAULT_BASE_PORT, value_name = "PORT")]
    pub base_port: u16,
    /// Where keys live: auto (SoftHSM2 tokens when installed and SOFTHSM2_CONF is set, as
    /// ops/demo.sh does; software keys otherwise), software, softhsm.
    #[arg(long, value_enum, default_value_t = KeyChoice::Auto)]
    pub keys: KeyChoice,
    /// Synthetic citizens.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    pub citizens: u32,
    /// Seed of the synthetic data: the same seed gives the same people and records.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// People who go through the scenario first (referral, e-prescription, dispensing, claim):
    /// four exchanges each, plus one emergency access.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub scenarios: u32,
    /// After the first scenarios, this many more people go through it (eight at a time), for
    /// load. Default: none.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub traffic: u32,
    /// Seconds between calendar publications (hourly in production).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub publication_interval: u64,
    /// Milliseconds between timestamping batches of each message log.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub batch_interval_ms: u64,
    /// Stop after the traffic and the summary instead of running until Ctrl-C.
    #[arg(long)]
    pub exit_after_traffic: bool,
}

/// Runs the demo.
///
/// # Errors
///
/// Key store, storage and listener failures; [`Error::Check`] when an exchange fails or a check
/// of the summary does not hold.
pub fn run(args: &DemoArgs, settings: &Settings, env: &Env) -> Result<(), Error> {
    tracing::info!(version = crate::telemetry::VERSION, config = %settings.summary(), "backbone demo starting");
    let dir = &args.data_dir;
    backbone_hsm::private::create_dir(dir).map_err(Error::io("create directory", dir))?;
    let keys = Keys::choose(args.keys, dir, env)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Check(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(demo(args, &keys))
}

async fn demo(args: &DemoArgs, keys: &Keys) -> Result<(), Error> {
    let dir = &args.data_dir;
    let signal = crate::registry::shutdown_signal();
    tokio::pin!(signal);
    say(format!("Backbone demo, data directory {}", dir.display()));
    say(format!("keys: {}", keys.describe()));
    let people = data::citizens(args.seed, usize::try_from(args.citizens).unwrap_or(1000))
        .map_err(|e| Error::Check(e.to_string()))?;
    let scenario: Vec<Citizen> = with_conditions(&people)
        .take(usize::try_from(args.scenarios).unwrap_or(10))
        .collect();
    let settings = network::Settings {
        dir,
        ports: Ports {
            base: args.base_port,
        },
        publication_interval: args.publication_interval,
        batch_interval: Duration::from_millis(args.batch_interval_ms),
        portal_persons: portal::persons(scenario.first()),
    };
    let network = Network::start(&settings, keys, &people).await?;
    say(format!(
        "registry {} ({}), timestamping http://{} (publications every {} s)",
        network.conf_url,
        if network.fresh {
            "initialised now"
        } else {
            "reused"
        },
        network.timestamping,
        args.publication_interval
    ));
    for node in &network.nodes {
        let service = node.service.as_ref().map_or_else(
            || "no service".to_owned(),
            |s| format!("FHIR {}", s.base_url()),
        );
        say(format!(
            "  {:<22} {:<25} gateway https://{} (peer {}), {service}",
            node.agency.slug,
            node.agency.client(),
            node.gateway.client_addr(),
            node.gateway.peer_addr()
        ));
    }
    say(format!(
        "  citizen portal         {} (test OpenID provider {})",
        network.portal.url, network.portal.provider_url
    ));
    say(format!(
        "{} synthetic citizens from seed {}",
        people.len(),
        args.seed
    ));

    let traffic = Traffic::new(&network)?;
    let more: Vec<Citizen> = with_conditions(&people)
        .cycle()
        .skip(scenario.len())
        .take(usize::try_from(args.traffic).unwrap_or(0))
        .collect();
    let planned = (scenario.len() + more.len()) as u64 * traffic::EXCHANGES_PER_PERSON + 1;
    let progress = progress(traffic.clone(), planned);
    let today = rfc3339(unix_ms())
        .get(..10)
        .unwrap_or("2026-01-01")
        .to_owned();
    let mut interrupted = tokio::select! {
        () = traffic.run(scenario.clone(), true, &today) => false,
        () = &mut signal => true,
    };
    if !interrupted && !more.is_empty() {
        interrupted = tokio::select! {
            () = traffic.run(more, false, &today) => false,
            () = &mut signal => true,
        };
    }
    progress.abort();
    let _ = progress.await;
    eprintln!(
        "\rtraffic: {}/{planned} exchanges, {} failed{}",
        traffic.done.load(Ordering::Relaxed),
        traffic.failed.load(Ordering::Relaxed),
        if interrupted { " (interrupted)" } else { "" }
    );
    let outcome = summary(args, &network, &traffic, scenario.first()).await;
    if outcome.is_ok() && !interrupted && !args.exit_after_traffic {
        say("press Ctrl-C to stop".to_owned());
        (&mut signal).await;
    }
    say("stopping: portal, gateways, message logs, services, registry, timestamping".to_owned());
    network.shutdown().await;
    say("stopped".to_owned());
    outcome
}

/// People with at least one diagnosis, in order.
fn with_conditions(people: &[Citizen]) -> impl Iterator<Item = Citizen> + Clone + '_ {
    people.iter().filter(|p| !p.conditions.is_empty()).cloned()
}

/// Prints the progress line on standard error every half second, when it is a terminal.
fn progress(traffic: Traffic, planned: u64) -> tokio::task::JoinHandle<()> {
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        if !terminal {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let done = traffic.done.load(Ordering::Relaxed);
            let failed = traffic.failed.load(Ordering::Relaxed);
            eprint!("\rtraffic: {done}/{planned} exchanges, {failed} failed   ");
        }
    })
}

/// Stamps the logs, writes the files an auditor can check, and prints the summary.
async fn summary(
    args: &DemoArgs,
    network: &Network,
    traffic: &Traffic,
    person: Option<&Citizen>,
) -> Result<(), Error> {
    let dir = &args.data_dir;
    let exchanges = traffic.exchanges();
    let failed = exchanges
        .iter()
        .filter(|e| !(200..300).contains(&e.status))
        .count();
    let path = dir.join("exchanges.json");
    let json = serde_json::to_vec_pretty(&exchanges).map_err(|e| Error::Check(e.to_string()))?;
    std::fs::write(&path, json).map_err(Error::io("write", &path))?;
    // Portal view before stamping, so that its own findUsage calls are stamped too.
    let other = other_person(&network.portal.persons, &exchanges);
    let portal = match person {
        Some(person) => {
            Some(portal_view(network, person, other.map(|p| format!("EE{}", p.code))).await?)
        }
        None => None,
    };
    for node in &network.nodes {
        if let Err(e) = node.log.stamp_now().await {
            tracing::warn!(agency = node.agency.slug, error = %e, "stamping now failed; the stamper retries");
        }
    }

    say(String::new());
    say(format!(
        "== summary: {} exchanges made, {failed} failed (each one listed in {})",
        exchanges.len(),
        path.display()
    ));
    for node in &network.nodes {
        let status = node.log.status();
        say(format!(
            "  {:<22} message log: {} records, {} timestamped, {} waiting",
            node.agency.slug,
            status.records,
            status.records.saturating_sub(status.unstamped),
            status.unstamped
        ));
    }
    let publications = network
        .ts_handle
        .publications()
        .map_err(|e| Error::Check(format!("publications: {e}")))?;
    match publications.last() {
        Some(p) => say(format!(
            "latest publication ({}): {}",
            rfc3339(p.time.saturating_mul(1000)),
            p.to_publication_string()
        )),
        None => say(format!(
            "no publication yet: the first is at the next multiple of {} s of the clock",
            args.publication_interval
        )),
    }
    let cert = network.calendar_cert.display();
    let me = command_name();
    let (signature, root) = proof_file(network, person, dir)?;
    say("verify offline (these files stay valid after the demo stops):".to_owned());
    say(format!(
        "  {me} ksi verify {} --hash 01{root} --cert {cert}",
        signature.display()
    ));
    let bundle = audit_file(network, dir)?;
    say(format!(
        "  {me} audit verify {} --cert {cert}",
        bundle.display()
    ));
    say(format!(
        "portal: {} ({} behind its gateway https://{}; reports and view log in {})",
        network.portal.url,
        Agency::of(Role::Portal).client(),
        network
            .node(Role::Portal)
            .map(|n| n.gateway.client_addr().to_string())
            .unwrap_or_default(),
        dir.join(Agency::of(Role::Portal).slug).display(),
    ));
    if let (Some(person), Some((agencies, entries, others))) = (person, portal) {
        let accesses = exchanges
            .iter()
            .filter(|e| e.data_subject == person.subject);
        let emergencies = accesses
            .clone()
            .filter(|e| e.purpose_of_use == "ETREAT")
            .count();
        say(format!(
            "  sign in through the test OpenID provider as {} {} ({}): {} accesses, {emergencies} in an emergency ({entries} log records at {agencies} agencies)",
            person.given,
            person.family,
            person.subject,
            accesses.count(),
        ));
        if let Some(other) = other {
            say(format!(
                "  another test person, {} {} (EE{}): {others} accesses",
                other.given_name, other.family_name, other.code
            ));
        }
    }
    say("metrics (Prometheus; ops/prometheus.yml, ops/grafana/backbone.json):".to_owned());
    for node in &network.nodes {
        say(format!(
            "  https://{}/metrics  ({})",
            node.gateway.client_addr(),
            node.agency.slug
        ));
    }
    if failed > 0 {
        return Err(Error::Check(format!(
            "{failed} of {} exchanges failed (see {})",
            exchanges.len(),
            path.display()
        )));
    }
    Ok(())
}

/// Writes the KSI signature of the batch holding one of `person`'s logged accesses at the
/// hospital: (file, batch root hex).
fn proof_file(
    network: &Network,
    person: Option<&Citizen>,
    dir: &Path,
) -> Result<(PathBuf, String), Error> {
    let node = network
        .node(Role::Hospital)
        .ok_or(Error::Unreachable("no hospital"))?;
    let subject = person.map(|p| p.subject.as_str()).unwrap_or_default();
    let entries = node
        .log
        .find_usage(subject, 0, 100)
        .map_err(|e| Error::Check(format!("hospital log: {e}")))?;
    let (seq, stamp) = entries
        .iter()
        .find_map(|e| e.stamp.as_ref().map(|s| (e.seq, s)))
        .ok_or_else(|| {
            Error::Check(
                "no stamped record at the hospital yet (is the timestamping service answering?)"
                    .into(),
            )
        })?;
    let proofs = dir.join("proofs");
    std::fs::create_dir_all(&proofs).map_err(Error::io("create directory", &proofs))?;
    let path = proofs.join(format!("hospital-record-{seq}.ksig"));
    std::fs::write(&path, &stamp.batch.ksi_signature).map_err(Error::io("write", &path))?;
    Ok((path, hex(&stamp.batch.root)))
}

/// Writes an audit archive of the hospital's whole log (the stamped part).
fn audit_file(network: &Network, dir: &Path) -> Result<PathBuf, Error> {
    let node = network
        .node(Role::Hospital)
        .ok_or(Error::Unreachable("no hospital"))?;
    let now = unix_ms();
    let selection = Selection {
        from_ms: 0,
        to_ms: now.saturating_add(1),
        after: None,
    };
    let export = archive::export(&node.log, &node.agency.gateway_id(), selection, now)
        .map_err(|e| Error::Check(format!("audit export: {e}")))?;
    let bytes = export
        .archive
        .encode()
        .map_err(|e| Error::Check(format!("audit archive: {e}")))?;
    let audit = dir.join("audit");
    std::fs::create_dir_all(&audit).map_err(Error::io("create directory", &audit))?;
    let path = audit.join("hospital.bbar");
    std::fs::write(&path, bytes).map_err(Error::io("write", &path))?;
    Ok(path)
}

/// A test person of the portal's provider whom the traffic did not touch.
fn other_person<'a>(
    persons: &'a [TestPerson],
    exchanges: &[traffic::Exchange],
) -> Option<&'a TestPerson> {
    persons.iter().find(|p| {
        !exchanges
            .iter()
            .any(|e| e.data_subject.strip_prefix("EE") == Some(&*p.code))
    })
}

/// What the portal will show: `person`'s accesses gathered by findUsage through the portal's
/// gateway from every agency, and how many another person gets (0). Each answer must be about the
/// person asked for only: (agencies that answered with entries, entries, entries for the other).
async fn portal_view(
    network: &Network,
    person: &Citizen,
    other: Option<String>,
) -> Result<(usize, usize, usize), Error> {
    let portal = network
        .node(Role::Portal)
        .ok_or(Error::Unreachable("no portal gateway"))?;
    let http = portal.system.clone().with_timeout(Duration::from_secs(10));
    let count = |subject: String| {
        let http = http.clone();
        async move {
            let (mut agencies, mut entries) = (0, 0);
            for node in network
                .nodes
                .iter()
                .filter(|n| n.agency.role != Role::Portal)
            {
                let target = format!(
                    "/r1/{}/{}?limit=500",
                    node.agency.client(),
                    backbone_gateway::meta::FIND_USAGE
                );
                let response = http
                    .get(target)
                    .header("X-Road-Client", portal.agency.client())
                    .header("X-Backbone-Data-Subject", subject.as_str())
                    .header("X-Backbone-Purpose-Of-Use", "PATRQT")
                    .header("X-Road-UserId", subject.as_str())
                    .send()
                    .await
                    .map_err(|e| Error::Check(format!("findUsage at {}: {e}", node.agency.slug)))?;
                let status = response.status;
                let body = response.body;
                let answer: UsageAnswer = serde_json::from_slice(&body).map_err(|e| {
                    Error::Check(format!("findUsage at {} ({status}): {e}", node.agency.slug))
                })?;
                if answer.data_subject != subject {
                    return Err(Error::Check(format!(
                        "findUsage at {} answered about another person",
                        node.agency.slug
                    )));
                }
                // Each look-up is logged before it is answered, so it is in its own answer:
                // accesses are the rest.
                let accesses = answer
                    .entries
                    .iter()
                    .filter(|e| {
                        !e.service
                            .ends_with(&format!("/{}", backbone_gateway::meta::FIND_USAGE))
                    })
                    .count();
                agencies += usize::from(accesses > 0);
                entries += accesses;
            }
            Ok::<_, Error>((agencies, entries))
        }
    };
    let (agencies, entries) = count(person.subject.clone()).await?;
    let other = match other {
        Some(other) => count(other).await?.1,
        None => 0,
    };
    Ok((agencies, entries, other))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A line on standard output; a closed output (a supervisor that stopped reading) must not stop
/// the demo.
fn say(line: String) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// How to call this binary in the printed commands: `backbone` when that name on PATH is this
/// binary, else its full path (as when `ops/demo.sh` runs it from the build directory).
fn command_name() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "backbone".to_owned();
    };
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("backbone"))
        .find(|c| c.is_file());
    match on_path {
        Some(found) if std::fs::canonicalize(&found).ok() == std::fs::canonicalize(&exe).ok() => {
            "backbone".to_owned()
        }
        _ => exe.display().to_string(),
    }
}
