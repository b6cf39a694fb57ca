//! `backbone bench exchange`: exchanges per second and latency through two gateways, beside two
//! baselines measured in the same run on the same box.
//!
//! ```text
//!  (a) load ─────────────────────────────────────────────────────────────▶ echo
//!  (b) load ─▶ proxy 1 ══ HTTP/2, TLS 1.3 ══▶ proxy 2 ──────────────────▶ echo
//!  (c) load ─▶ gateway A (sign, log) ══ HTTP/2, TLS 1.3 ══▶ gateway B (check, rights, sign, log) ─▶ echo
//!      then (a) and (c) again at half of (c)'s rate, open loop: the latency the gateways add
//!      then both message logs: every exchange logged on each side, stamped, verified offline
//! ```
//!
//! Everything runs in this process on 127.0.0.1, on one tokio runtime: the load generator, the
//! echo service, the proxies, both gateways, their message logs (RocksDB, fsynced) and the
//! timestamping service compete for the same cores, as on any one-box test. The exchanges are
//! X-Road REST r1 POSTs from `EE/COM/10000001/dispensing` to the hospital's `ping` service, which
//! carries no health data; `--health` calls the `patients` service instead, with a data subject
//! and a purpose of use, which the gateways also sign, log and index. Not part of the test suite
//! beyond one smoke run.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backbone_gateway::log::MessageLog;
use backbone_gateway::log::verify;
use clap::Args;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};

use self::backbone::{Backbone, KeyBackend};
use self::load::{Load, Measured, Target};
use crate::Error;
use backbone_gateway::systems::Connection;

mod backbone;
mod load;
mod proxy;
mod timings;

/// Target rate through the gateways, exchanges per second.
const TARGET_RATE: f64 = 5000.0;
/// Target share of the plain proxy chain's rate.
const TARGET_SHARE: f64 = 0.40;
/// Target p99 latency the gateways add at half their rate, milliseconds.
const TARGET_ADDED_P99_MS: f64 = 10.0;
/// The shortest pause in completions the report counts as a stall: at half rate about a dozen
/// exchanges would normally complete in it.
const STALL: Duration = Duration::from_millis(5);
/// The windows the half-rate run is cut into to see whether its slowest exchanges bunch.
const TAIL_WINDOW: Duration = Duration::from_millis(100);
/// Records exported and verified at a time when the logs are checked.
const VERIFY_CHUNK: u64 = 20_000;

/// Flags of `backbone bench exchange`.
#[derive(Debug, Args)]
pub struct ExchangeBenchArgs {
    /// Concurrent HTTP/1.1 keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub connections: u32,
    /// Seconds each phase loads for (five phases, plus a warm-up of up to a second before each
    /// target).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Bytes of each request body and of each answer.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(0..=1 << 20))]
    pub body_bytes: u64,
    /// Where the agencies' keys live. Default: softhsm when /usr/lib/softhsm/libsofthsm2.so
    /// exists (a fresh token per agency, in the token directory SOFTHSM2_CONF names, deleted at
    /// the end), else software.
    #[arg(long, value_enum)]
    pub hsm: Option<KeyBackend>,
    /// Call the health-data service, with X-Backbone-Data-Subject and X-Backbone-Purpose-Of-Use.
    /// Default: a service without health data.
    #[arg(long)]
    pub health: bool,
    /// Worker threads of each gateway's batch signer (each makes one token signature at a time).
    /// Default: the gateway's own setting (`backbone_gateway::service::signer_config`, one worker).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub signer_workers: Option<u32>,
    /// Microseconds a batch signer worker waits for more requests before it signs, under load.
    /// Default: the gateway's (`backbone_gateway::service::SIGNER_LINGER`, 500).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub signer_linger_us: Option<u64>,
    /// Milliseconds between message-log timestamping batches. Default: the gateway's default
    /// (`backbone_gateway::log::DEFAULT_BATCH_INTERVAL`, 2,000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub batch_interval_ms: Option<u64>,
    /// Tokio worker threads for everything. Default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also measure phase (c) with the information system on the gateway's plain HTTP listener
    /// (its connection type set to `http`) instead of HTTPS with its client certificate: what
    /// TLS on the client port costs, in the same run.
    #[arg(long)]
    pub compare_plain_client: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write each exchange of phase (c) at half rate to this file, one CSV line each:
    /// when it began and how long it took, in microseconds since the phase began.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<std::path::PathBuf>,
}

/// Runs `backbone bench exchange`.
///
/// # Errors
///
/// A part of the backbone that cannot start, a phase with no successful exchange, or message
/// logs that do not hold, stamp and verify every exchange.
pub fn run(args: &ExchangeBenchArgs) -> Result<(), Error> {
    let backend = args
        .hsm
        .unwrap_or(if std::path::Path::new(backbone::SOFTHSM_MODULE).exists() {
            KeyBackend::Softhsm
        } else {
            KeyBackend::Software
        });
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| Error::Check(format!("cannot start the runtime: {e}")))?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let report = runtime.block_on(async {
        let body_bytes = usize::try_from(args.body_bytes)
            .map_err(|_| Error::Usage("--body-bytes is too large".into()))?;
        let echo = proxy::echo(Bytes::from(vec![b'x'; body_bytes])).await?;
        let backbone = Backbone::start(setup(args, backend), echo.addr).await?;
        let measured = measure(args, body_bytes, &echo, &backbone).await;
        let logs = match &measured {
            Ok(m) => check_logs(&backbone, m.gateway_exchanges).await,
            Err(_) => Ok(Vec::new()),
        };
        backbone.stop().await;
        let measured = measured?;
        if let Some(path) = &args.timeline {
            write_timeline(path, &measured.gateways_at_half)?;
        }
        Ok::<_, Error>(Report::new(args, backend, threads, measured, logs?))
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|e| Error::Check(format!("report: {e}")))?
        );
    } else {
        print!("{}", report.table());
    }
    report.check()
}

/// `measured`'s timeline as CSV: `began_us,latency_us`, in the order the exchanges began.
fn write_timeline(path: &std::path::Path, measured: &Measured) -> Result<(), Error> {
    use std::fmt::Write as _;
    let mut csv = String::from("began_us,latency_us\n");
    for (began, latency) in &measured.timeline {
        let _ = writeln!(csv, "{},{}", began.as_micros(), latency.as_micros());
    }
    std::fs::write(path, csv).map_err(|e| {
        Error::Check(format!(
            "cannot write the timeline to {}: {e}",
            path.display()
        ))
    })
}

/// The gateways' setup the flags ask for.
fn setup(args: &ExchangeBenchArgs, keys: KeyBackend) -> backbone::Setup {
    let mut signing = backbone_gateway::service::signer_config();
    if let Some(workers) = args.signer_workers {
        signing.workers = workers as usize;
    }
    if let Some(linger) = args.signer_linger_us {
        signing.max_linger = Duration::from_micros(linger);
    }
    let batch_interval = args.batch_interval_ms.map_or(
        backbone_gateway::log::DEFAULT_BATCH_INTERVAL,
        Duration::from_millis,
    );
    backbone::Setup {
        keys,
        signing,
        batch_interval,
    }
}

/// What the five phases measured.
struct Phases {
    direct: Measured,
    chain: Measured,
    gateways: Measured,
    /// Phase (c) with the information system on the plain listener, if asked for.
    gateways_plain_client: Option<Measured>,
    half_rate: f64,
    direct_at_half: Measured,
    gateways_at_half: Measured,
    /// Exchanges the gateways answered with success, warm-up included.
    gateway_exchanges: u64,
    /// The gateways' histograms over phase (c) at the maximum rate.
    timings: Vec<timings::Timing>,
    /// CPU time per kind of thread over the same phase.
    threads: Vec<timings::ThreadTime>,
    /// The gateways' histograms over phase (c) at half the rate.
    timings_at_half: Vec<timings::Timing>,
    /// CPU time per kind of thread over phase (c) at half the rate.
    threads_at_half: Vec<timings::ThreadTime>,
    /// Microseconds of CPU (every thread of the process: load generator, proxies, echo) per
    /// exchange of phase (b): a figure that other load on the machine does not move much.
    chain_cpu_us: f64,
    /// The same for phase (c): load generator, both gateways, logs, signers, stamping, echo.
    gateways_cpu_us: f64,
    /// The same for phases (a) and (c) at half rate. Both cost more per exchange at half rate than
    /// at the maximum: at half the load each request wakes threads that were parked instead of
    /// finding them busy.
    direct_at_half_cpu_us: f64,
    gateways_at_half_cpu_us: f64,
    /// The machine's CPU time the hypervisor gave to other guests.
    steal: Steal,
    /// Snapshots at the edges of the half-rate phase's windows (`timings::sample_windows`).
    samples_at_half: Vec<timings::Snapshot>,
}

/// What the gateways' histograms and the threads say about one window of the half-rate phase.
#[derive(Debug, serde::Serialize)]
struct WindowDetail {
    /// Where the window begins, in seconds from the phase's start.
    at_s: f64,
    /// The histograms observed in the window.
    timings: Vec<timings::Timing>,
    /// CPU per kind of thread in the window.
    threads: Vec<timings::ThreadTime>,
}

/// The share of the machine's CPU time the hypervisor gave to other guests (`/proc/stat`), by
/// phase, and in the half-rate phase's windows; `None` where it cannot be read.
#[derive(Debug, Default, serde::Serialize)]
struct Steal {
    chain: Option<f64>,
    gateways: Option<f64>,
    gateways_at_half: Option<f64>,
    /// Each 100-ms window of phase (c) at half rate, in order.
    #[serde(skip)]
    windows_at_half: Vec<Option<f64>>,
    /// The windows of `Tail::top`, in its order.
    top_windows_at_half: Vec<Option<f64>>,
}

async fn measure(
    args: &ExchangeBenchArgs,
    body_bytes: usize,
    echo: &proxy::Server,
    backbone: &Backbone,
) -> Result<Phases, Error> {
    let body = Bytes::from(vec![b'{'; body_bytes]);
    let direct = Arc::new(Target {
        addr: echo.addr,
        path: "/ping/bench".into(),
        headers: Vec::new(),
        body: body.clone(),
        answer_len: body_bytes,
        tls: None,
    });
    let (first, _second) = proxy::chain(
        echo.addr,
        (
            Arc::clone(&backbone.hospital.tls),
            backbone.hospital.tls_certificate.clone(),
        ),
        (
            Arc::clone(&backbone.pharmacy.tls),
            backbone.pharmacy.tls_certificate.clone(),
        ),
    )
    .await?;
    let chain = Arc::new(Target {
        addr: first.addr,
        path: "/ping/bench".into(),
        headers: Vec::new(),
        body: body.clone(),
        answer_len: body_bytes,
        tls: None,
    });
    let gateways = Arc::new(gateway_target(
        args.health,
        backbone,
        body.clone(),
        body_bytes,
        false,
    )?);

    let full = Duration::from_secs(args.seconds);
    let warm_up = Load {
        connections: args.connections,
        duration: full.min(Duration::from_secs(1)) / 2 + Duration::from_millis(250),
        rate: None,
    };
    let closed = Load {
        connections: args.connections,
        duration: full,
        rate: None,
    };
    let mut gateway_exchanges = 0;

    let direct_max = phase("direct", &direct, warm_up, closed).await?;
    let registries = [
        ("pharmacy", &backbone.pharmacy.metrics),
        ("hospital", &backbone.hospital.metrics),
    ];
    warm("proxy chain", &chain, warm_up).await?;
    let chain_before = timings::Snapshot::take(&[]);
    let chain_max = load::drive(&chain, closed).await;
    let chain_after = timings::Snapshot::take(&[]);
    let chain_cpu_us = chain_before.cpu_seconds(&chain_after) * 1e6 / (chain_max.ok.max(1) as f64);
    gateway_exchanges += warm("gateways", &gateways, warm_up).await?;
    let before = timings::Snapshot::take(&registries);
    let gateways_max = load::drive(&gateways, closed).await;
    let after = timings::Snapshot::take(&registries);
    gateway_exchanges += gateways_max.ok;
    let gateways_cpu_us = before.cpu_seconds(&after) * 1e6 / (gateways_max.ok.max(1) as f64);

    let gateways_plain_client = if args.compare_plain_client {
        let plain = Arc::new(gateway_target(
            args.health,
            backbone,
            body,
            body_bytes,
            true,
        )?);
        backbone
            .pharmacy
            .gateway
            .systems()
            .set_connection(&backbone::client_id()?, Connection::Http)
            .map_err(|e| Error::Check(format!("information system: {e}")))?;
        gateway_exchanges += warm("gateways, plain client port", &plain, warm_up).await?;
        let measured = load::drive(&plain, closed).await;
        gateway_exchanges += measured.ok;
        backbone
            .pharmacy
            .gateway
            .systems()
            .set_connection(&backbone::client_id()?, Connection::Https)
            .map_err(|e| Error::Check(format!("information system: {e}")))?;
        Some(measured)
    } else {
        None
    };

    let half_rate = gateways_max.rate() / 2.0;
    let open = Load {
        connections: args.connections,
        duration: full,
        rate: Some(half_rate),
    };
    let direct_half_before = timings::Snapshot::take(&[]);
    let direct_at_half = load::drive(&direct, open).await;
    let direct_half_after = timings::Snapshot::take(&[]);
    let direct_at_half_cpu_us = direct_half_before.cpu_seconds(&direct_half_after) * 1e6
        / (direct_at_half.ok.max(1) as f64);
    let half_before = timings::Snapshot::take(&registries);
    // Logged with its wall-clock time, to line the report's windows up with other logs (the
    // message logs' RocksDB LOG files, for one).
    tracing::info!(
        rate = half_rate,
        "half-rate phase through the gateways begins"
    );
    let agencies = registries
        .iter()
        .map(|(agency, registry)| ((*agency).to_owned(), (*registry).clone()))
        .collect();
    let sampler = tokio::spawn(timings::sample_windows(
        agencies,
        TAIL_WINDOW,
        full + TAIL_WINDOW,
    ));
    let gateways_at_half = load::drive(&gateways, open).await;
    let half_after = timings::Snapshot::take(&registries);
    let samples_at_half = sampler.await.unwrap_or_default();
    let windows_at_half = samples_at_half
        .windows(2)
        .map(|w| w[0].steal(&w[1]))
        .collect();
    let steal = Steal {
        chain: chain_before.steal(&chain_after),
        gateways: before.steal(&after),
        gateways_at_half: half_before.steal(&half_after),
        windows_at_half,
        top_windows_at_half: Vec::new(),
    };
    gateway_exchanges += gateways_at_half.ok;
    let gateways_at_half_cpu_us =
        half_before.cpu_seconds(&half_after) * 1e6 / (gateways_at_half.ok.max(1) as f64);
    Ok(Phases {
        direct: direct_max,
        chain: chain_max,
        gateways: gateways_max,
        gateways_plain_client,
        half_rate,
        direct_at_half,
        gateways_at_half,
        gateway_exchanges,
        timings: before.timings(&after),
        threads: before.threads(&after),
        timings_at_half: half_before.timings(&half_after),
        threads_at_half: half_before.threads(&half_after),
        chain_cpu_us,
        gateways_cpu_us,
        direct_at_half_cpu_us,
        gateways_at_half_cpu_us,
        steal,
        samples_at_half,
    })
}

/// A warm-up, then the measured run.
async fn phase(
    name: &str,
    target: &Arc<Target>,
    warm_up: Load,
    run: Load,
) -> Result<Measured, Error> {
    warm(name, target, warm_up).await?;
    Ok(load::drive(target, run).await)
}

/// Loads `target` briefly (connections, pools and caches filled); returns the successes.
async fn warm(name: &str, target: &Arc<Target>, warm_up: Load) -> Result<u64, Error> {
    let warmed = load::drive(target, warm_up).await;
    if warmed.ok == 0 {
        let why = warmed.first_error.unwrap_or_else(|| "no answer".into());
        return Err(Error::Check(format!(
            "{name}: no exchange succeeded in the warm-up: {why}"
        )));
    }
    Ok(warmed.ok)
}

/// The r1 request to the pharmacy's gateway: over HTTPS with the information system's
/// certificate, or on the plain listener.
fn gateway_target(
    health: bool,
    backbone: &Backbone,
    body: Bytes,
    answer_len: usize,
    plain: bool,
) -> Result<Target, Error> {
    let service = if health {
        backbone::PATIENTS
    } else {
        backbone::PING
    };
    let path = format!("/r1/{service}/bench");
    let mut headers = vec![("x-road-client", backbone::CLIENT)];
    if health {
        headers.push(("x-backbone-data-subject", "EE38001085718"));
        headers.push(("x-backbone-purpose-of-use", "TREAT"));
    }
    let headers = headers
        .into_iter()
        .map(|(name, value)| {
            Ok((
                HeaderName::from_static(name),
                HeaderValue::from_str(value)
                    .map_err(|_| Error::Unreachable("header values are ASCII"))?,
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let gateway = &backbone.pharmacy.gateway;
    Ok(Target {
        addr: match gateway.client_plain_addr() {
            Some(plain_addr) if plain => plain_addr,
            _ => gateway.client_addr(),
        },
        path,
        headers,
        body,
        answer_len,
        tls: (!plain).then(|| backbone.system_tls.clone()),
    })
}

/// What one side's message log holds after the run; it verified offline, or the run failed.
#[derive(Debug, serde::Serialize)]
struct LogCheck {
    side: &'static str,
    records: u64,
    exchanges: u64,
    unstamped: u64,
    stamped: u64,
    batches: u64,
}

/// Stamps what is left in both logs and verifies them offline, in chunks.
async fn check_logs(backbone: &Backbone, exchanges: u64) -> Result<Vec<LogCheck>, Error> {
    let mut checks = Vec::new();
    for (side, log) in [
        ("pharmacy (client side)", &backbone.pharmacy.log),
        ("hospital (provider side)", &backbone.hospital.log),
    ] {
        checks.push(check_log(side, log, exchanges).await?);
    }
    Ok(checks)
}

async fn check_log(
    side: &'static str,
    log: &MessageLog,
    exchanges: u64,
) -> Result<LogCheck, Error> {
    let failed =
        |e: backbone_gateway::log::LogError| Error::Check(format!("{side} message log: {e}"));
    // The stamper may be stamping meanwhile; a few rounds at most.
    for _ in 0..5 {
        if log.status().unstamped == 0 {
            break;
        }
        log.stamp_now().await.map_err(failed)?;
    }
    let status = log.status();
    let mut stamped = 0;
    let mut batches = HashSet::new();
    let mut previous = None;
    let mut from = 0;
    while from < status.records {
        let to = status.records.min(from + VERIFY_CHUNK);
        let bundle = log.export(from, to).map_err(failed)?;
        batches.extend(bundle.batches.iter().map(|b| b.first_seq));
        let report = verify::verify(&bundle, previous)
            .map_err(|e| Error::Check(format!("{side} message log does not verify: {e}")))?;
        stamped += report.stamped;
        previous = report.last_hash;
        from = to;
    }
    let batches = batches.len() as u64;
    Ok(LogCheck {
        side,
        records: status.records,
        exchanges,
        unstamped: status.unstamped,
        stamped,
        batches,
    })
}

/// One row of the report.
#[derive(Debug, serde::Serialize)]
struct Row {
    phase: &'static str,
    offered_per_second: Option<f64>,
    exchanges_per_second: f64,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// The whole report, as printed or as JSON.
#[derive(Debug, serde::Serialize)]
struct Report {
    hsm: KeyBackend,
    service: &'static str,
    health_headers: bool,
    connections: u32,
    seconds: u64,
    body_bytes: u64,
    threads: usize,
    signer_workers: usize,
    signer_linger_us: u128,
    batch_interval_ms: u128,
    phases: Vec<Row>,
    gateways_to_proxy_chain: f64,
    half_rate: f64,
    added_p50_ms: f64,
    added_p99_ms: f64,
    /// When the slowest 1 % of phase (c) at half rate began: bunched (stalls) or spread.
    tail_at_half: load::Tail,
    /// Moments of phase (c) at half rate when no exchange completed for [`STALL`] or longer.
    stalls_at_half: load::Stalls,
    logs: Vec<LogCheck>,
    gateway_timings: Vec<timings::Timing>,
    gateway_threads: Vec<timings::ThreadTime>,
    gateway_timings_at_half: Vec<timings::Timing>,
    gateway_threads_at_half: Vec<timings::ThreadTime>,
    chain_cpu_us: f64,
    gateways_cpu_us: f64,
    direct_at_half_cpu_us: f64,
    gateways_at_half_cpu_us: f64,
    /// CPU taken by the hypervisor for other guests, by phase and in the slowest windows.
    steal: Steal,
    /// The gateways' histograms and the threads' CPU in the windows of the half-rate phase
    /// that held the most of its slowest 1 %, busiest first.
    slow_windows: Vec<WindowDetail>,
    /// The half-rate phase's window snapshots, and the milliseconds they took all together.
    window_snapshots: usize,
    window_sampling_ms: f64,
    rate_target_met: bool,
    share_target_met: bool,
    latency_target_met: bool,
}

// === impl Report ===

impl Report {
    fn new(
        args: &ExchangeBenchArgs,
        hsm: KeyBackend,
        threads: usize,
        phases: Phases,
        logs: Vec<LogCheck>,
    ) -> Report {
        let setup = setup(args, hsm);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let row = |phase, offered, m: &Measured| Row {
            phase,
            offered_per_second: offered,
            exchanges_per_second: m.rate(),
            ok: m.ok,
            errors: m.errors,
            first_error: m.first_error.clone(),
            p50_ms: ms(m.quantile(0.50)),
            p90_ms: ms(m.quantile(0.90)),
            p99_ms: ms(m.quantile(0.99)),
            max_ms: ms(m.max()),
        };
        let share = phases.gateways.rate() / phases.chain.rate().max(f64::EPSILON);
        let added_p50_ms =
            ms(phases.gateways_at_half.quantile(0.50)) - ms(phases.direct_at_half.quantile(0.50));
        let added_p99_ms =
            ms(phases.gateways_at_half.quantile(0.99)) - ms(phases.direct_at_half.quantile(0.99));
        let half = Some(phases.half_rate);
        let tail = phases.gateways_at_half.tail(0.99, TAIL_WINDOW);
        let mut steal = phases.steal;
        let window_us = TAIL_WINDOW.as_micros().max(1);
        let top_windows: Vec<Option<usize>> = tail
            .top
            .iter()
            .map(|(_, at)| usize::try_from(at.as_micros() / window_us).ok())
            .collect();
        steal.top_windows_at_half = top_windows
            .iter()
            .map(|w| w.and_then(|w| steal.windows_at_half.get(w).copied().flatten()))
            .collect();
        let samples = &phases.samples_at_half;
        let window_sampling_ms = samples
            .iter()
            .map(|s| s.took().as_secs_f64() * 1000.0)
            .sum();
        let slow_windows = top_windows
            .iter()
            .filter_map(|w| {
                let w = (*w)?;
                let (start, end) = (samples.get(w)?, samples.get(w + 1)?);
                Some(WindowDetail {
                    at_s: w as f64 * TAIL_WINDOW.as_secs_f64(),
                    timings: start.timings(end),
                    threads: start.threads(end),
                })
            })
            .collect();
        Report {
            hsm,
            service: if args.health {
                backbone::PATIENTS
            } else {
                backbone::PING
            },
            health_headers: args.health,
            connections: args.connections,
            seconds: args.seconds,
            body_bytes: args.body_bytes,
            threads,
            signer_workers: setup.signing.workers,
            signer_linger_us: setup.signing.max_linger.as_micros(),
            batch_interval_ms: setup.batch_interval.as_millis(),
            phases: [
                Some(row("(a) direct to the service", None, &phases.direct)),
                Some(row("(b) proxy chain, 2 hops, TLS", None, &phases.chain)),
                Some(row("(c) gateways A -> B", None, &phases.gateways)),
                phases
                    .gateways_plain_client
                    .as_ref()
                    .map(|m| row("(c) same, plain client port", None, m)),
                Some(row("(a) direct, half of (c)", half, &phases.direct_at_half)),
                Some(row(
                    "(c) gateways, half of (c)",
                    half,
                    &phases.gateways_at_half,
                )),
            ]
            .into_iter()
            .flatten()
            .collect(),
            gateways_to_proxy_chain: share,
            half_rate: phases.half_rate,
            added_p50_ms,
            added_p99_ms,
            tail_at_half: tail,
            stalls_at_half: phases.gateways_at_half.stalls(STALL),
            rate_target_met: phases.gateways.rate() >= TARGET_RATE,
            share_target_met: share >= TARGET_SHARE,
            latency_target_met: added_p99_ms <= TARGET_ADDED_P99_MS
                && phases.gateways_at_half.errors == 0,
            logs,
            gateway_timings: phases.timings,
            gateway_threads: phases.threads,
            gateway_timings_at_half: phases.timings_at_half,
            gateway_threads_at_half: phases.threads_at_half,
            chain_cpu_us: phases.chain_cpu_us,
            gateways_cpu_us: phases.gateways_cpu_us,
            direct_at_half_cpu_us: phases.direct_at_half_cpu_us,
            gateways_at_half_cpu_us: phases.gateways_at_half_cpu_us,
            steal,
            slow_windows,
            window_snapshots: phases.samples_at_half.len(),
            window_sampling_ms,
        }
    }

    fn table(&self) -> String {
        let mut out = format!(
            "{} keys; service {}{}; {} connections, {} s per phase, {}-byte bodies, {} worker threads; \
             batch signer: {} workers, {} us linger; log stamped every {} ms\n",
            match self.hsm {
                KeyBackend::Softhsm => "SoftHSM2",
                KeyBackend::Software => "software",
            },
            self.service,
            if self.health_headers {
                " with data subject and purpose of use"
            } else {
                " (no health data)"
            },
            self.connections,
            self.seconds,
            self.body_bytes,
            self.threads,
            self.signer_workers,
            self.signer_linger_us,
            self.batch_interval_ms,
        );
        out.push_str(&format!(
            "{:<30} {:>9} {:>11} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8}\n",
            "phase",
            "offered/s",
            "exchanges/s",
            "ok",
            "errors",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms"
        ));
        for row in &self.phases {
            let offered = row
                .offered_per_second
                .map_or_else(|| "max".to_owned(), |r| format!("{r:.0}"));
            out.push_str(&format!(
                "{:<30} {:>9} {:>11.0} {:>9} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
                row.phase,
                offered,
                row.exchanges_per_second,
                row.ok,
                row.errors,
                row.p50_ms,
                row.p90_ms,
                row.p99_ms,
                row.max_ms
            ));
            if let Some(error) = &row.first_error {
                out.push_str(&format!("    first error: {error}\n"));
            }
        }
        out.push_str(&format!(
            "(c)/(b): {:.1} %\n",
            self.gateways_to_proxy_chain * 100.0
        ));
        out.push_str(&format!(
            "added by the gateways at {:.0}/s: p50 {:.2} ms, p99 {:.2} ms\n",
            self.half_rate, self.added_p50_ms, self.added_p99_ms
        ));
        let tail = &self.tail_at_half;
        out.push_str(&format!(
            "slowest 1 % at half rate ({} exchanges, >= {:.2} ms) began in {} of {} {}-ms windows\n",
            tail.slow,
            tail.from.as_secs_f64() * 1000.0,
            tail.windows_with_slow,
            tail.windows,
            tail.window.as_millis(),
        ));
        let pct = |share: Option<f64>| {
            share.map_or_else(|| "?".to_owned(), |s| format!("{:.0} %", s * 100.0))
        };
        let top: Vec<String> = tail
            .top
            .iter()
            .zip(
                self.steal
                    .top_windows_at_half
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(None)),
            )
            .map(|((n, at), steal)| {
                format!("{n} at {:.1} s (steal {})", at.as_secs_f64(), pct(steal))
            })
            .collect();
        out.push_str(&format!(
            "  windows with the most, busiest first: {}\n",
            top.join(", ")
        ));
        for window in &self.slow_windows {
            let means: Vec<String> = window
                .timings
                .iter()
                .map(|t| {
                    format!(
                        "{} {} {:.1}{}{}",
                        t.agency,
                        t.short,
                        t.mean,
                        if t.unit.is_empty() { "" } else { " " },
                        t.unit
                    )
                })
                .collect();
            let threads: Vec<String> = window
                .threads
                .iter()
                .filter(|t| t.cores >= 0.05)
                .map(|t| format!("{} {:.2}", t.name, t.cores))
                .collect();
            out.push_str(&format!(
                "    at {:.1} s, means: {}; CPU (cores): {}\n",
                window.at_s,
                means.join(", "),
                threads.join(", ")
            ));
        }
        let stalls = &self.stalls_at_half;
        let longest: Vec<String> = stalls
            .longest
            .iter()
            .map(|(at, length)| {
                format!(
                    "{:.1} ms at {:.3} s",
                    length.as_secs_f64() * 1000.0,
                    at.as_secs_f64()
                )
            })
            .collect();
        out.push_str(&format!(
            "  moments at half rate when no exchange completed for {} ms or more while some waited: {}{}{}\n",
            stalls.from.as_millis(),
            stalls.count,
            if longest.is_empty() { "" } else { "; longest " },
            longest.join(", ")
        ));
        out.push_str(&format!(
            "  (the {} window snapshots took {:.1} ms in all, {:.2} % of one core over the phase)\n",
            self.window_snapshots,
            self.window_sampling_ms,
            self.window_sampling_ms / (self.seconds as f64 * 1000.0).max(1.0) * 100.0
        ));
        out.push_str(&format!(
            "CPU taken by the hypervisor for other guests (steal): (b) {}, (c) {}, (c) at half rate {}\n",
            pct(self.steal.chain),
            pct(self.steal.gateways),
            pct(self.steal.gateways_at_half)
        ));
        for log in &self.logs {
            out.push_str(&format!(
                "message log, {}: {} records for {} exchanges (2 each: {}), {} unstamped after a final stamp, {} stamped in {} batches, verified offline\n",
                log.side,
                log.records,
                log.exchanges,
                if log.records == 2 * log.exchanges { "yes" } else { "NO" },
                log.unstamped,
                log.stamped,
                log.batches,
            ));
        }
        out.push_str(
            "where the time of (c) at the maximum rate goes, from the gateways' own metrics:\n",
        );
        timing_lines(&mut out, &self.gateway_timings);
        thread_line(&mut out, &self.gateway_threads);
        out.push_str(&format!(
            "  CPU per exchange, whole process (load generator and echo included): (b) {:.0} us, (c) {:.0} us\n",
            self.chain_cpu_us, self.gateways_cpu_us
        ));
        out.push_str(&format!(
            "and at half the rate ({:.0}/s):\n",
            self.half_rate
        ));
        timing_lines(&mut out, &self.gateway_timings_at_half);
        thread_line(&mut out, &self.gateway_threads_at_half);
        out.push_str(&format!(
            "  CPU per exchange, whole process: (a) {:.0} us, (c) {:.0} us ({:+.0} % against (c) at the maximum rate)\n",
            self.direct_at_half_cpu_us,
            self.gateways_at_half_cpu_us,
            (self.gateways_at_half_cpu_us / self.gateways_cpu_us.max(f64::EPSILON) - 1.0) * 100.0
        ));
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        out.push_str(&format!(
            "targets: >= {TARGET_RATE:.0} exchanges/s {}; >= {:.0} % of the proxy chain {}; p99 added <= {TARGET_ADDED_P99_MS:.0} ms at half rate {}\n",
            met(self.rate_target_met),
            TARGET_SHARE * 100.0,
            met(self.share_target_met),
            met(self.latency_target_met),
        ));
        out
    }

    /// Fails when a phase had no success or the logs do not hold every exchange, stamped.
    fn check(&self) -> Result<(), Error> {
        if let Some(row) = self.phases.iter().find(|r| r.ok == 0) {
            return Err(Error::Check(format!(
                "phase {} had no successful exchange: {}",
                row.phase,
                row.first_error.as_deref().unwrap_or("no answer")
            )));
        }
        for log in &self.logs {
            if log.records != 2 * log.exchanges || log.unstamped != 0 || log.stamped != log.records
            {
                return Err(Error::Check(format!(
                    "{} message log: {} records for {} exchanges, {} unstamped, {} stamped",
                    log.side, log.records, log.exchanges, log.unstamped, log.stamped
                )));
            }
        }
        Ok(())
    }
}

/// The CPU each kind of thread took over a phase, in cores.
fn thread_line(out: &mut String, threads: &[timings::ThreadTime]) {
    out.push_str("  CPU by thread (cores):");
    for t in threads {
        if t.cores >= 0.005 {
            out.push_str(&format!(" {} x{} {:.2};", t.name, t.threads, t.cores));
        }
    }
    out.push('\n');
}

/// One line per histogram: count, mean, and the bucket bound that holds the 99th percentile.
fn timing_lines(out: &mut String, timings: &[timings::Timing]) {
    for t in timings {
        let p99 = t.p99_at_most.map_or_else(
            || "over the last bucket".to_owned(),
            |v| format!("p99 <= {v}"),
        );
        out.push_str(&format!(
            "  {:<9} {:<72} {:>9} x mean {:>8.3} {:<2} {:<14} ({})\n",
            t.agency, t.metric, t.count, t.mean, t.unit, p99, t.meaning
        ));
    }
}
