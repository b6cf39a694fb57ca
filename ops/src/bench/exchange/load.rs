//! The load generator of `backbone bench exchange`: N hyper HTTP/1.1 keep-alive connections, each
//! sending one POST at a time, either as fast as answers come back (closed loop) or on a fixed
//! schedule (open loop, for latency at a given rate).
//!
//! ```text
//!  connection i: POST body ─▶ target ─▶ 200 + body read whole ─▶ next (now, or at its slot)
//!  latency: from the request's slot (open loop) or its send (closed loop) to its whole answer
//! ```
//!
//! In the open loop, connection i sends at `start + (k·N + i)/rate`; a late answer delays the
//! next request, and the delay counts in that request's latency, so queueing is not hidden
//! (no coordinated omission). A request sent on time counts from its send, so that the timer's
//! millisecond granularity does not count as latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where and what to send.
pub struct Target {
    /// The server.
    pub addr: SocketAddr,
    /// The request path.
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request body.
    pub body: Bytes,
    /// The answer's body length every success must have.
    pub answer_len: usize,
    /// TLS to the server, if it speaks TLS.
    pub tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// How to load.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Concurrent connections.
    pub connections: u32,
    /// How long to send for.
    pub duration: Duration,
    /// Requests per second in total; `None` for as fast as the answers allow.
    pub rate: Option<f64>,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Measured {
    /// Requests answered 200 with a body of the expected length.
    pub ok: u64,
    /// Requests answered otherwise, or lost with their connection.
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// The latency of each success, sorted.
    pub latencies: Vec<Duration>,
    /// Each success's start (since the run began) and latency, in the order they began.
    pub timeline: Vec<(Duration, Duration)>,
}

/// How the slowest exchanges of a run lie in time: bunched into a few moments (a stall) or
/// spread over the run (queueing).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tail {
    /// The latency from which an exchange counts as slow (the quantile asked for).
    pub from: Duration,
    /// Slow exchanges.
    pub slow: usize,
    /// The windows the run was cut into, and the length of each.
    pub windows: usize,
    /// Window length.
    pub window: Duration,
    /// Windows in which at least one slow exchange began.
    pub windows_with_slow: usize,
    /// The five windows with the most slow exchanges: how many began in each and when it
    /// began, most first (the busiest first).
    pub top: Vec<(usize, Duration)>,
}

/// Moments when no exchange completed for a while although some were in flight: every exchange
/// then waited on one thing (a stalled disk, a blocked thread, the hypervisor).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stalls {
    /// The shortest pause that counts.
    pub from: Duration,
    /// How many pauses of at least `from` there were.
    pub count: usize,
    /// The longest pauses, longest first: when each began (since the run began) and how long it
    /// lasted.
    pub longest: Vec<(Duration, Duration)>,
}

// === impl Measured ===

impl Measured {
    /// Successes per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency at quantile `q` (nearest rank, so a quantile is an observed value).
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        self.latencies.get(rank).copied().unwrap_or_default()
    }

    /// The slowest success.
    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    /// Where in time the exchanges at or above quantile `q` began, in windows of `window`.
    pub fn tail(&self, q: f64, window: Duration) -> Tail {
        let from = self.quantile(q);
        let width = window.as_micros().max(1);
        let windows = usize::try_from(self.elapsed.as_micros() / width)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let mut counts = std::collections::BTreeMap::<u128, usize>::new();
        for (began, latency) in &self.timeline {
            if *latency >= from && from > Duration::ZERO {
                *counts.entry(began.as_micros() / width).or_default() += 1;
            }
        }
        let at = |w: u128| Duration::from_micros(u64::try_from(w * width).unwrap_or(u64::MAX));
        let mut top: Vec<_> = counts.iter().map(|(w, n)| (*n, at(*w))).collect();
        // Most first; of equal counts, the earlier window first.
        top.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        top.truncate(5);
        Tail {
            from,
            slow: counts.values().sum(),
            windows,
            window,
            windows_with_slow: counts.len(),
            top,
        }
    }

    /// The pauses of at least `from` between one completion and the next, while an exchange
    /// that began before the pause was still waiting (a gap between two bursts of an idle
    /// schedule is not a stall).
    pub fn stalls(&self, from: Duration) -> Stalls {
        let mut spans: Vec<(Duration, Duration)> = self
            .timeline
            .iter()
            .map(|(began, latency)| (*began, began.saturating_add(*latency)))
            .collect();
        spans.sort_unstable_by_key(|(_, ended)| *ended);
        // The earliest start among the exchanges from each one on (in the order they ended): an
        // exchange in flight across a pause began before it.
        let mut earliest_from: Vec<Duration> = spans
            .iter()
            .rev()
            .scan(Duration::MAX, |earliest, (began, _)| {
                *earliest = (*earliest).min(*began);
                Some(*earliest)
            })
            .collect();
        earliest_from.reverse();
        let mut pauses = Vec::new();
        for (((_, ended), (_, next)), earliest_later) in spans
            .iter()
            .zip(spans.iter().skip(1))
            .zip(earliest_from.iter().skip(1))
        {
            let pause = next.saturating_sub(*ended);
            if pause >= from && earliest_later <= ended {
                pauses.push((*ended, pause));
            }
        }
        let count = pauses.len();
        pauses.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        pauses.truncate(5);
        Stalls {
            from,
            count,
            longest: pauses,
        }
    }

    fn merge(&mut self, other: Measured) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
        self.timeline.extend(other.timeline);
    }

    fn fail(&mut self, why: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why);
        }
    }
}

/// Loads `target` as `load` says and gathers what every connection measured.
pub async fn drive(target: &Arc<Target>, load: Load) -> Measured {
    let start = Instant::now();
    let connections = load.connections.max(1);
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let target = Arc::clone(target);
            // Connection i's requests are N / rate apart, offset by i / rate.
            let schedule = load.rate.filter(|r| *r > 0.0).map(|rate| {
                let gap = Duration::from_secs_f64(f64::from(connections) / rate);
                (start + Duration::from_secs_f64(f64::from(i) / rate), gap)
            });
            tokio::spawn(connection(target, start, start + load.duration, schedule))
        })
        .collect();
    let mut total = Measured::default();
    for task in tasks {
        match task.await {
            Ok(measured) => total.merge(measured),
            Err(e) => total.fail(format!("load task ended: {e}")),
        }
    }
    total.elapsed = start.elapsed();
    total.latencies.sort_unstable();
    total.timeline.sort_unstable();
    total
}

/// One connection's requests until `deadline`; reconnects once after an error.
async fn connection(
    target: Arc<Target>,
    start: Instant,
    deadline: Instant,
    schedule: Option<(Instant, Duration)>,
) -> Measured {
    let mut measured = Measured::default();
    let mut sender = None;
    let mut slot = schedule.map(|(first, _)| first);
    loop {
        let began = match slot {
            Some(at) => {
                if at >= deadline {
                    break;
                }
                if Instant::now() < at {
                    // On time: the timer's own lateness (up to a millisecond) is not the
                    // server's, so the latency counts from the send.
                    tokio::time::sleep_until(at.into()).await;
                    Instant::now()
                } else {
                    // Behind: the wait since the slot is queueing, and counts.
                    at
                }
            }
            None => Instant::now(),
        };
        if slot.is_none() && began >= deadline {
            break;
        }
        if let (Some(at), Some((_, gap))) = (slot, schedule) {
            slot = Some(at + gap);
        }
        if sender.is_none() {
            match connect(&target).await {
                Ok(s) => sender = Some(s),
                Err(why) => {
                    measured.fail(why);
                    break;
                }
            }
        }
        let Some(open) = sender.as_mut() else { break };
        match exchange(open, &target).await {
            Ok(()) => {
                let latency = began.elapsed();
                measured.ok += 1;
                measured.latencies.push(latency);
                measured
                    .timeline
                    .push((began.saturating_duration_since(start), latency));
            }
            Err(why) => {
                measured.fail(why);
                sender = None;
            }
        }
    }
    measured
}

async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, String> {
    let addr = target.addr;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = &target.tls else {
        return handshake(stream, addr).await;
    };
    // The pin identifies the server; the name is only carried in the handshake.
    let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = tls
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with {addr}: {e}"))?;
    handshake(stream, addr).await
}

async fn handshake<S>(stream: S, addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One POST and its whole answer.
async fn exchange(sender: &mut SendRequest<Full<Bytes>>, target: &Target) -> Result<(), String> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(target.path.as_str())
        .header(hyper::header::HOST, target.addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json");
    for (name, value) in &target.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(target.body.clone()))
        .map_err(|e| format!("request: {e}"))?;
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("answer body: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        let start = String::from_utf8_lossy(body.get(..body.len().min(300)).unwrap_or_default())
            .into_owned();
        return Err(format!("HTTP {status}: {start}"));
    }
    if body.len() != target.answer_len {
        return Err(format!(
            "answer of {} bytes, expected {}",
            body.len(),
            target.answer_len
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_names_the_windows_where_the_slowest_began_busiest_first() {
        let ms = Duration::from_millis;
        let mut measured = Measured {
            elapsed: ms(1_000),
            ..Measured::default()
        };
        // 100 fast exchanges spread over the second; slow ones: three in the window at 0.5 s,
        // one at 0.2 s, one at 0.8 s.
        measured.timeline = (0..100).map(|i| (ms(i * 10), ms(1))).collect();
        measured.timeline.extend([
            (ms(510), ms(50)),
            (ms(520), ms(60)),
            (ms(590), ms(70)),
            (ms(200), ms(40)),
            (ms(800), ms(45)),
        ]);
        measured.latencies = measured.timeline.iter().map(|(_, l)| *l).collect();
        measured.latencies.sort_unstable();
        let tail = measured.tail(0.96, ms(100));
        assert_eq!(tail.from, ms(40));
        assert_eq!(
            (tail.slow, tail.windows, tail.windows_with_slow),
            (5, 11, 3)
        );
        assert_eq!(tail.top, vec![(3, ms(500)), (1, ms(200)), (1, ms(800))]);
    }

    #[test]
    fn stalls_are_pauses_in_completions_while_exchanges_wait() {
        let ms = Duration::from_millis;
        let mut measured = Measured {
            elapsed: ms(1_000),
            ..Measured::default()
        };
        // One exchange every 2 ms, each taking 2 ms; those that began at 300-328 ms all wait
        // until 330 ms (a 30-ms stall after the completion at 300 ms); from 600 to 700 ms nothing
        // is sent at all (a pause, not a stall).
        measured.timeline = (0..500u64)
            .filter(|i| !(300..350).contains(i))
            .map(|i| {
                let began = ms(i * 2);
                let latency = if (150..165).contains(&i) {
                    ms(330) - began
                } else {
                    ms(2)
                };
                (began, latency)
            })
            .collect();
        let stalls = measured.stalls(ms(5));
        assert_eq!(
            (stalls.count, stalls.longest.clone()),
            (1, vec![(ms(300), ms(30))]),
            "{stalls:?}"
        );
        assert_eq!(measured.stalls(ms(31)).count, 0);
    }
}
