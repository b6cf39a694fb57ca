//! `backbone bench timestamping`: load on the timestamping service over HTTP, with the baselines
//! it is judged against measured in the same run on the same box.
//!
//! ```text
//!  N connections, each: PDU of K requests (HMAC) ─POST /─▶ service ─▶ response PDU (K chains)
//!        │ one PDU in flight per connection; the latency is send → whole answer read, its MAC
//!        │ and each payload's status checked (the first answer decoded and verified in full)
//!  baseline 1: N × K tasks calling Handle::sign in-process (the service without HTTP or PDUs)
//!  baseline 2: the same client against an HTTP server that answers every POST at once with a
//!              response PDU recorded from the service (HTTP and the client's checks alone)
//! ```
//!
//! Without `--service`, the service runs in this process on 127.0.0.1:0 with software keys and
//! a RocksDB calendar in a temporary directory (removed at the end), on the same tokio runtime
//! as the clients: the load generator competes with the service for the same cores, as it would
//! on any one-box test. Not part of the test suite.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use backbone_hsm::software::SoftwareKeyStore;
use backbone_hsm::{KeyStore, KeyType, Signer};
use backbone_timestamping::authority::{CalendarSigner, issue_certificates};
use backbone_timestamping::calendar::rocks::RocksStore;
use backbone_timestamping::calendar::{Calendar, CalendarStore};
use backbone_timestamping::http::MAX_REQUESTS_PER_PDU;
use backbone_timestamping::http::{self, PduAuth};
use backbone_timestamping::round::{ClientId, InputHash, Request};
use backbone_timestamping::service::{self, Config, Handle};
use backbone_timestamping_verify::imprint::{HashAlgorithm, Imprint};
use backbone_timestamping_verify::pdu::{
    AggregationRequest, AggregatorRequest, AggregatorResponse, Header, TAG_AGGREGATOR_RESPONSE,
};
use backbone_timestamping_verify::signature::{Anchor, Signature};
use backbone_timestamping_verify::tlv;
use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};
use clap::{Args, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use crate::Error;

pub mod exchange;

/// `backbone bench ...`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to load.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The load commands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Signing requests per second over HTTP (KSI aggregator PDUs), with latency, beside the
    /// in-process `Handle::sign` rate and an HTTP echo of the same PDUs.
    Timestamping(TimestampingBenchArgs),
    /// Exchanges per second and latency through two gateways (client → gateway A → gateway B →
    /// service), beside the service called directly and a plain two-hop TLS proxy chain; then
    /// checks that both message logs hold, stamp and verify every exchange.
    Exchange(exchange::ExchangeBenchArgs),
}

impl BenchCommand {
    /// `bench verb`, for logs and traces.
    pub fn name(&self) -> &'static str {
        match self {
            BenchCommand::Timestamping(_) => "bench timestamping",
            BenchCommand::Exchange(_) => "bench exchange",
        }
    }
}

/// Flags of `backbone bench timestamping`.
#[derive(Debug, Args)]
pub struct TimestampingBenchArgs {
    /// A running service to load. Default: one started in this process on 127.0.0.1:0 (software
    /// keys, RocksDB calendar in a temporary directory, one-second rounds).
    #[arg(long)]
    pub service: Option<SocketAddr>,
    /// Concurrent HTTP/1.1 connections, each with one PDU in flight.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=8192))]
    pub connections: u32,
    /// Requests per PDU, at most the service's limit (`MAX_REQUESTS_PER_PDU`, 24: a response
    /// PDU is one TLV element of at most 65,535 bytes and each answer takes about 1.4 KB of it).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=24))]
    pub batch: u32,
    /// Seconds each phase loads for.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Login id in the PDU headers.
    #[arg(long, default_value = "anon")]
    pub login_id: String,
    /// File holding the PDU HMAC key. Default: the login id (the service's test setting).
    #[arg(long, value_name = "FILE")]
    pub hmac_key_file: Option<PathBuf>,
    /// Tokio worker threads for the clients (and the in-process service). Default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Skip the two baselines.
    #[arg(long)]
    pub no_baselines: bool,
}

/// What one phase measured.
#[derive(Debug, Default)]
struct Phase {
    /// Requests answered with a signature.
    signed: u64,
    /// Requests answered with an error status, or lost with their connection.
    failed: u64,
    /// PDUs (or single calls) answered.
    calls: u64,
    /// Wall time from the first send to the last answer.
    elapsed: Duration,
    /// Latency of each call, sorted.
    latencies: Vec<Duration>,
    /// Bytes of the last response PDU, for the echo baseline.
    last_response: Option<Vec<u8>>,
    /// When each call was sent and answered.
    timeline: Vec<(Instant, Instant)>,
}

/// Runs one `backbone bench` command.
///
/// # Errors
///
/// Usage errors, a service that cannot be started or reached, or answers that do not verify.
pub fn run(args: &BenchArgs) -> Result<(), Error> {
    match &args.command {
        BenchCommand::Timestamping(t) => run_timestamping(t),
        BenchCommand::Exchange(e) => exchange::run(e),
    }
}

fn run_timestamping(args: &TimestampingBenchArgs) -> Result<(), Error> {
    if args.batch as usize > MAX_REQUESTS_PER_PDU {
        return Err(Error::Usage(format!(
            "--batch {} is above the service's limit of {MAX_REQUESTS_PER_PDU} requests per PDU",
            args.batch
        )));
    }
    let key = match &args.hmac_key_file {
        Some(path) => std::fs::read(path).map_err(Error::io("read", path))?,
        None => args.login_id.clone().into_bytes(),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| Error::Check(format!("cannot start the runtime: {e}")))?;
    let client = Arc::new(Client {
        login_id: args.login_id.clone(),
        key,
        batch: args.batch as usize,
        next: AtomicU64::new(0),
    });
    let load = Duration::from_secs(args.seconds);
    runtime.block_on(async {
        let local = match args.service {
            Some(_) => None,
            None => Some(LocalService::start(&client).await?),
        };
        let addr = args.service.or(local.as_ref().map(|l| l.addr)).ok_or(Error::Unreachable("no service address"))?;
        println!(
            "service {addr}{}; {} connections × {} requests per PDU, {} s per phase, {} worker threads",
            if local.is_some() { " (in-process: software ECDSA P-256 key, RocksDB calendar, 1 s rounds)" } else { "" },
            args.connections,
            args.batch,
            args.seconds,
            runtime_threads(args.threads),
        );
        let sample = client.check_one(addr).await?;
        println!("a response signature verifies under the internal policy (aggregation time {sample})");

        let over_http = drive_pdus(&client, addr, args.connections, load).await;
        report("HTTP POST / (PDU v2)", args.batch, &over_http);
        if !args.no_baselines {
            if let Some(local) = &local {
                let direct = drive_handle(&local.handle, u64::from(args.connections) * u64::from(args.batch), load).await;
                report("baseline: Handle::sign, no HTTP", 1, &direct);
            }
            match &over_http.last_response {
                Some(response) => {
                    let echo = EchoServer::start(response.clone()).await?;
                    let echoed = drive_pdus(&client, echo.addr, args.connections, load).await;
                    report("baseline: HTTP echo of a response", args.batch, &echoed);
                    echo.task.abort();
                }
                None => println!("baseline: HTTP echo skipped: no response was recorded"),
            }
        }
        if let Some(local) = local {
            local.stop().await;
        }
        Ok(())
    })
}

fn runtime_threads(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

fn report(name: &str, per_call: u32, phase: &Phase) {
    let seconds = phase.elapsed.as_secs_f64().max(f64::EPSILON);
    let at = |q: f64| {
        let n = phase.latencies.len();
        if n == 0 {
            return 0.0;
        }
        // Nearest rank, so the p99 of few calls is an observed value, not an interpolation.
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        phase
            .latencies
            .get(rank)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{name:<36} {:>9.0} requests/s  ({} signed, {} failed, {} calls of {per_call} in {:.2} s)  latency p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        phase.signed as f64 / seconds,
        phase.signed,
        phase.failed,
        phase.calls,
        seconds,
        at(0.50),
        at(0.99),
        phase
            .latencies
            .last()
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
    bursts(phase);
}

/// The answers arrive in one burst per round: how long each burst lasts (first to last answer),
/// and where the calls slower than 1.2 s were sent and answered within their bursts.
fn bursts(phase: &Phase) {
    let mut answered: Vec<Instant> = phase.timeline.iter().map(|(_, a)| *a).collect();
    answered.sort_unstable();
    let mut starts = Vec::new();
    let mut lengths = Vec::new();
    let mut first = None;
    let mut last = None;
    for at in &answered {
        if last.is_none_or(|l: Instant| at.duration_since(l) > Duration::from_millis(100)) {
            if let (Some(f), Some(l)) = (first, last) {
                lengths.push(l.duration_since(f));
            }
            first = Some(*at);
            starts.push(*at);
        }
        last = Some(*at);
    }
    if let (Some(f), Some(l)) = (first, last) {
        lengths.push(l.duration_since(f));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let offset = |t: Instant| {
        starts
            .iter()
            .rev()
            .find(|s| **s <= t)
            .map_or(Duration::ZERO, |s| t.duration_since(*s))
    };
    let slow: Vec<_> = phase
        .timeline
        .iter()
        .filter(|(s, a)| a.duration_since(*s) > Duration::from_millis(1200))
        .collect();
    let mean = |f: &dyn Fn(&(Instant, Instant)) -> Duration| {
        slow.iter().map(|c| ms(f(c))).sum::<f64>() / slow.len().max(1) as f64
    };
    let mut sorted = lengths.clone();
    sorted.sort_unstable();
    println!(
        "  {} answer bursts, first→last answer p50 {:.0} ms max {:.0} ms (each: {:?}); {} calls over 1.2 s: sent {:.0} ms into a burst, answered {:.0} ms into one (mean)",
        lengths.len(),
        sorted.get(sorted.len() / 2).map_or(0.0, |d| ms(*d)),
        sorted.last().map_or(0.0, |d| ms(*d)),
        lengths.iter().map(|d| ms(*d) as u64).collect::<Vec<_>>(),
        slow.len(),
        mean(&|(s, _)| offset(*s)),
        mean(&|(_, a)| offset(*a)),
    );
}

/// Builds request PDUs of distinct hashes and reads the answers.
#[derive(Debug)]
struct Client {
    login_id: String,
    key: Vec<u8>,
    batch: usize,
    next: AtomicU64,
}

impl Client {
    /// A PDU of `batch` requests, each a distinct SHA-256 imprint (not hashed: its bytes are a
    /// counter, which the service cannot tell from a digest).
    fn pdu(&self) -> Result<Vec<u8>, Error> {
        let first = self.next.fetch_add(self.batch as u64, Ordering::Relaxed);
        let payloads = (0..self.batch as u64)
            .map(|i| {
                let mut digest = [0x42u8; 32];
                digest[..8].copy_from_slice(&(first + i).to_be_bytes());
                let hash = Imprint::new(HashAlgorithm::Sha256, &digest)
                    .map_err(|e| Error::Check(e.to_string()))?;
                Ok(AggregationRequest {
                    request_id: i + 1,
                    hash,
                    level: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let header = Header {
            login_id: self.login_id.as_str().into(),
            instance_id: Some(1),
            message_id: Some(first),
        };
        AggregatorRequest::new(header, payloads)
            .encode(&self.key, HashAlgorithm::Sha256)
            .map_err(|e| Error::Check(e.to_string()))
    }

    /// Checks an answer's MAC and reads each payload's status; returns how many requests were
    /// signed (status 0 and an aggregation chain) and how many refused. The chains themselves
    /// are not decoded: [`Client::check_one`] decodes and verifies a whole answer before the
    /// load, and decoding every answer would cost the one machine that also runs the service
    /// more than the service spends encoding them.
    fn count(&self, body: &[u8]) -> Result<(u64, u64), Error> {
        let bad = |why: String| Error::Check(format!("response PDU: {why}"));
        let top = tlv::decode(body).map_err(|e| bad(e.to_string()))?;
        if top.tag() != TAG_AGGREGATOR_RESPONSE {
            return Err(bad(format!(
                "tag {:#x}, not an aggregator response",
                top.tag()
            )));
        }
        let (mut signed, mut mac) = (0u64, None);
        for child in top.children() {
            let child = child.map_err(|e| bad(e.to_string()))?;
            match child.tag() {
                0x02 => {
                    let (mut status, mut chain) = (None, false);
                    for field in child.children() {
                        let field = field.map_err(|e| bad(e.to_string()))?;
                        match field.tag() {
                            0x04 => status = Some(field.as_u64().map_err(|e| bad(e.to_string()))?),
                            0x801 => chain = true,
                            _ => {}
                        }
                    }
                    if status == Some(0) && chain {
                        signed += 1;
                    }
                }
                0x1f => mac = Some(child.as_imprint().map_err(|e| bad(e.to_string()))?),
                _ => {}
            }
        }
        let mac = mac
            .filter(|m| m.algorithm() == HashAlgorithm::Sha256)
            .ok_or_else(|| bad("no HMAC-SHA-256".to_owned()))?;
        let covered = body
            .get(..body.len().saturating_sub(mac.digest().len()))
            .unwrap_or_default();
        let key = openssl::pkey::PKey::hmac(&self.key).map_err(|e| bad(e.to_string()))?;
        let mut hmac = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)
            .map_err(|e| bad(e.to_string()))?;
        let expected = hmac
            .sign_oneshot_to_vec(covered)
            .map_err(|e| bad(e.to_string()))?;
        if !body.ends_with(mac.digest())
            || expected.len() != mac.digest().len()
            || !openssl::memcmp::eq(&expected, mac.digest())
        {
            return Err(bad("wrong HMAC".to_owned()));
        }
        Ok((signed, (self.batch as u64).saturating_sub(signed)))
    }

    /// Sends one PDU and verifies the first signature in the answer under the internal policy;
    /// returns its aggregation time.
    async fn check_one(&self, addr: SocketAddr) -> Result<u64, Error> {
        let mut connection = connect(addr).await?;
        let body = post(&mut connection, addr, &self.pdu()?)
            .await
            .map_err(|e| Error::Check(format!("{addr}: {e}")))?;
        let (signed, _) = self.count(&body)?;
        let response = AggregatorResponse::decode(&body)
            .map_err(|e| Error::Check(format!("response PDU: {e}")))?;
        response
            .check_mac(&self.key, HashAlgorithm::Sha256)
            .map_err(|e| Error::Check(format!("response PDU: {e}")))?;
        let first = response
            .payloads
            .first()
            .filter(|_| signed > 0)
            .ok_or_else(|| Error::Check("the service signed nothing".to_owned()))?;
        let calendar = first
            .calendar_chain
            .clone()
            .ok_or_else(|| Error::Check("no calendar chain in the answer".to_owned()))?;
        let record = first
            .calendar_auth_record
            .clone()
            .ok_or_else(|| Error::Check("no calendar authentication record".to_owned()))?;
        let signature = Signature::new(
            None,
            first.aggregation_chains.clone(),
            Some((calendar, Anchor::CalendarAuth(record))),
        )
        .map_err(|e| Error::Check(format!("the answer is not a signature: {e}")))?;
        let verdict = verify::verify(&signature, Policy::Internal, &Context::default());
        if verdict.outcome != Outcome::Ok {
            return Err(Error::Check(format!(
                "the service's signature does not verify: {verdict}"
            )));
        }
        Ok(signature.signing_time())
    }
}

/// `connections` clients, each sending PDUs one after another on its own connection until
/// `load` has passed. Every connection is opened before the clock starts, so that the phase
/// measures signing, not thousands of simultaneous TCP handshakes.
async fn drive_pdus(
    client: &Arc<Client>,
    addr: SocketAddr,
    connections: u32,
    load: Duration,
) -> Phase {
    let connected = Arc::new(tokio::sync::Barrier::new(connections as usize + 1));
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let client = Arc::clone(client);
            let connected = Arc::clone(&connected);
            tokio::spawn(async move {
                let mut phase = Phase::default();
                let connection = connect(addr).await;
                connected.wait().await;
                let Ok(mut connection) = connection else {
                    phase.failed += client.batch as u64;
                    return phase;
                };
                let deadline = Instant::now() + load;
                while Instant::now() < deadline {
                    let Ok(pdu) = client.pdu() else { break };
                    let sent = Instant::now();
                    let answer = post(&mut connection, addr, &pdu).await;
                    let took = sent.elapsed();
                    match answer
                        .map_err(|e| Error::Check(e.to_string()))
                        .and_then(|body| client.count(&body).map(|c| (c, body)))
                    {
                        Ok(((signed, failed), body)) => {
                            phase.signed += signed;
                            phase.failed += failed;
                            phase.calls += 1;
                            phase.latencies.push(took);
                            phase.timeline.push((sent, sent + took));
                            phase.last_response = Some(body);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "PDU failed; connection closed");
                            phase.failed += client.batch as u64;
                            break;
                        }
                    }
                }
                phase
            })
        })
        .collect();
    connected.wait().await;
    gather(tasks, Instant::now()).await
}

/// `callers` tasks calling [`Handle::sign`] one request after another until `load` has passed.
async fn drive_handle(handle: &Handle, callers: u64, load: Duration) -> Phase {
    let start = Instant::now();
    let deadline = start + load;
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let handle = handle.clone();
            let client_id = ClientId::from("bench");
            tokio::spawn(async move {
                let mut phase = Phase::default();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let mut digest = [0x17u8; 32];
                    digest[..8].copy_from_slice(&c.to_be_bytes());
                    digest[8..16].copy_from_slice(&n.to_be_bytes());
                    n += 1;
                    let Ok(hash) = InputHash::new(HashAlgorithm::Sha256, &digest) else {
                        break;
                    };
                    let sent = Instant::now();
                    let signed = handle
                        .sign(Request {
                            hash,
                            level: 0,
                            client_id: client_id.clone(),
                        })
                        .await;
                    phase.calls += 1;
                    match signed {
                        Ok(_) => {
                            phase.signed += 1;
                            let took = sent.elapsed();
                            phase.latencies.push(took);
                            phase.timeline.push((sent, sent + took));
                        }
                        Err(_) => phase.failed += 1,
                    }
                }
                phase
            })
        })
        .collect();
    gather(tasks, start).await
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<Phase>>, start: Instant) -> Phase {
    let mut total = Phase::default();
    for task in tasks {
        if let Ok(phase) = task.await {
            total.signed += phase.signed;
            total.failed += phase.failed;
            total.calls += phase.calls;
            total.latencies.extend(phase.latencies);
            total.timeline.extend(phase.timeline);
            if phase.last_response.is_some() {
                total.last_response = phase.last_response;
            }
        }
    }
    total.elapsed = start.elapsed();
    total.latencies.sort_unstable();
    total
}

async fn connect(addr: SocketAddr) -> Result<BufStream<TcpStream>, Error> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Error::Check(format!("cannot connect to {addr}: {e}")))?;
    stream
        .set_nodelay(true)
        .map_err(|e| Error::Check(format!("{addr}: {e}")))?;
    Ok(BufStream::with_capacity(64 << 10, 64 << 10, stream))
}

/// One HTTP/1.1 POST / on a kept-alive connection; the body of a 200 answer. Enough HTTP for
/// hyper's answers: a status line, headers with Content-Length, the body.
async fn post(
    connection: &mut BufStream<TcpStream>,
    addr: SocketAddr,
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/ksi-request\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    connection.write_all(head.as_bytes()).await?;
    connection.write_all(body).await?;
    connection.flush().await?;
    let mut line = String::new();
    connection.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("status line {line:?}")))?;
    let mut length = None;
    loop {
        line.clear();
        if connection.read_line(&mut line).await? == 0 {
            return Err(invalid("connection closed in the headers".to_owned()));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let length = length.ok_or_else(|| invalid("no Content-Length".to_owned()))?;
    let mut answer = vec![0; length];
    connection.read_exact(&mut answer).await?;
    if status != 200 {
        return Err(invalid(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&answer)
        )));
    }
    Ok(answer)
}

/// The service in this process, as `backbone timestamping serve` runs it minus the RFC 3161
/// front end and the publications file.
struct LocalService {
    addr: SocketAddr,
    handle: Handle,
    running: service::Running,
    server: tokio::task::JoinHandle<()>,
    dir: PathBuf,
}

impl LocalService {
    async fn start(client: &Client) -> Result<LocalService, Error> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("backbone-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        let keys_dir = dir.join("keys");
        let keys = SoftwareKeyStore::open(&keys_dir)
            .map_err(Error::hsm("cannot open the software key store"))?;
        for label in ["timestamping-ca", "timestamping"] {
            keys.generate(label, KeyType::EcP256)
                .map_err(Error::hsm(format!("cannot generate key '{label}'")))?;
        }
        let ca: Arc<dyn Signer> = keys
            .signer("timestamping-ca", None)
            .map_err(Error::hsm("cannot open the CA key"))?;
        let key: Arc<dyn Signer> = keys
            .signer("timestamping", None)
            .map_err(Error::hsm("cannot open the calendar key"))?;
        let not_before = SystemTime::now() - Duration::from_secs(60);
        let failed = |what: &'static str| {
            move |e: backbone_timestamping::Error| Error::Check(format!("{what}: {e}"))
        };
        let (_, certificate) = issue_certificates(ca.as_ref(), key.as_ref(), not_before, 1)
            .map_err(failed("cannot issue the calendar certificate"))?;
        let signer = CalendarSigner::new(key, &certificate)
            .map_err(failed("cannot use the calendar certificate"))?;
        let calendar_dir = dir.join("calendar");
        let rocks = RocksStore::open(&calendar_dir).map_err(|e| {
            Error::Check(format!(
                "cannot open the calendar at {}: {e}",
                calendar_dir.display()
            ))
        })?;
        let store: Box<dyn CalendarStore> = Box::new(rocks);
        let calendar = Calendar::open(store).map_err(failed("cannot open the calendar"))?;
        let running = service::spawn(calendar, signer, Config::default())
            .map_err(failed("cannot start the service"))?;
        let auth = PduAuth {
            login_id: client.login_id.clone(),
            key: client.key.clone(),
        };
        let app = http::router(running.handle.clone(), auth);
        let (listener, addr) = listen()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(LocalService {
            addr,
            handle: running.handle.clone(),
            running,
            server,
            dir,
        })
    }

    async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        drop(self.handle);
        self.running.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A listener on 127.0.0.1:0 whose accept queue holds every connection the load command may
/// open at once (the kernel caps it at `net.core.somaxconn`), so that none is reset.
fn listen() -> Result<(tokio::net::TcpListener, SocketAddr), Error> {
    let failed = |e: std::io::Error| Error::Check(format!("cannot listen: {e}"));
    let socket = tokio::net::TcpSocket::new_v4().map_err(failed)?;
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(failed)?;
    let listener = socket.listen(8192).map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    Ok((listener, addr))
}

/// Answers every POST at once with the same recorded response PDU.
struct EchoServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    async fn start(response: Vec<u8>) -> Result<EchoServer, Error> {
        let response = axum::body::Bytes::from(response);
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |_body: axum::body::Bytes| {
                let response = response.clone();
                async move { response }
            }),
        );
        let app = app.layer(axum::extract::DefaultBodyLimit::max(http::MAX_BODY));
        let (listener, addr) = listen()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(EchoServer { addr, task })
    }
}
