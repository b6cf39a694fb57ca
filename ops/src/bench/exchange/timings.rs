//! Where the time of a gateway phase goes: the gateways' own histograms (whole exchange per
//! side, batch-signer wait and batch size, message-log append and group size) and the CPU time
//! of each kind of thread, each as the difference between a snapshot before and after the phase.
//!
//! ```text
//!  snapshot ─▶ phase (c) ─▶ snapshot ─▶ Δ sum / Δ count per histogram · Δ CPU ticks per thread name
//!                                       Δ bucket counts ─▶ the bucket bound under which 99 % fell
//! ```
//!
//! Thread CPU comes from `/proc/self/task/*/stat` (Linux; elsewhere the list is empty), in clock
//! ticks of 1/100 s, the value of `USER_HZ` on every Linux architecture the backbone runs on.
//!
//! On a virtual machine, the hypervisor may run other guests on this machine's CPUs: the time
//! taken so ("steal", from `/proc/stat`) is reported beside each phase and in the windows where
//! the slowest exchanges bunched, since no change to the code can win it back.

use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second in `/proc/*/stat`.
const USER_HZ: f64 = 100.0;

/// The histograms worth reading, with what each one means.
const HISTOGRAMS: &[(&str, &str, &str)] = &[
    (
        "backbone_gateway_exchange_seconds",
        "whole exchange inside the gateway",
        "exchange",
    ),
    (
        "backbone_gateway_peer_round_trip_seconds",
        "request sent to the provider gateway until its answer is read",
        "peer round trip",
    ),
    (
        "backbone_hsm_batch_wait_seconds",
        "wait for a batch signature",
        "signature wait",
    ),
    (
        "backbone_hsm_batch_size_messages",
        "messages per batch signature",
        "per signature",
    ),
    (
        "backbone_gateway_log_append_duration_seconds",
        "message-log append until durable",
        "log append",
    ),
    (
        "backbone_gateway_log_commit_batch_records",
        "records per synced log write",
        "per log write",
    ),
];

/// Histogram sums and counts, and CPU time per thread name, at one moment.
#[derive(Debug)]
pub struct Snapshot {
    histograms: BTreeMap<(String, String), Histogram>,
    threads: BTreeMap<String, u64>,
    cpu: Option<CpuClock>,
    at: Instant,
    /// How long taking this snapshot took.
    took: std::time::Duration,
}

/// The machine's CPU time, summed over its CPUs, in clock ticks (`/proc/stat`, line `cpu`): all
/// of it, and the part the hypervisor gave to other guests.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    steal: u64,
    total: u64,
}

/// One histogram's cumulative state.
#[derive(Debug, Clone, Default)]
struct Histogram {
    sum: f64,
    count: u64,
    /// (upper bound, cumulative count) per bucket, in increasing order.
    buckets: Vec<(f64, u64)>,
}

/// One histogram over the phase.
#[derive(Debug, serde::Serialize)]
pub struct Timing {
    /// The agency whose gateway recorded it.
    pub agency: String,
    /// The metric and its labels.
    pub metric: String,
    /// What it measures.
    pub meaning: &'static str,
    /// The same in a word or two.
    pub short: &'static str,
    /// Observations in the phase.
    pub count: u64,
    /// Their mean: milliseconds for a time, else the quantity itself.
    pub mean: f64,
    /// The upper bound of the bucket that holds the 99th percentile, in the same unit; `None`
    /// when it lies above the last bucket.
    pub p99_at_most: Option<f64>,
    /// `ms` or empty.
    pub unit: &'static str,
}

/// One kind of thread over the phase.
#[derive(Debug, serde::Serialize)]
pub struct ThreadTime {
    /// The thread name without its trailing number.
    pub name: String,
    /// Threads of that name.
    pub threads: usize,
    /// CPU time used, in cores (1.0 is one core busy for the whole phase).
    pub cores: f64,
}

// === impl Snapshot ===

impl Snapshot {
    /// Reads every agency's registry and the threads' CPU time now.
    pub fn take(agencies: &[(&str, &prometheus::Registry)]) -> Snapshot {
        let started = Instant::now();
        let mut histograms = BTreeMap::new();
        for (agency, registry) in agencies {
            for family in registry.gather() {
                if !HISTOGRAMS.iter().any(|(name, ..)| *name == family.name()) {
                    continue;
                }
                for metric in family.get_metric() {
                    let labels: Vec<String> = metric
                        .get_label()
                        .iter()
                        .map(|l| format!("{}={}", l.name(), l.value()))
                        .collect();
                    let key = format!("{}{{{}}}", family.name(), labels.join(","));
                    let histogram = metric.get_histogram();
                    let buckets = histogram
                        .get_bucket()
                        .iter()
                        .map(|b| (b.upper_bound(), b.cumulative_count()))
                        .collect();
                    let state = Histogram {
                        sum: histogram.get_sample_sum(),
                        count: histogram.get_sample_count(),
                        buckets,
                    };
                    histograms.insert(((*agency).to_owned(), key), state);
                }
            }
        }
        let (threads, cpu) = (thread_ticks(), CpuClock::now());
        Snapshot {
            histograms,
            threads,
            cpu,
            at: Instant::now(),
            took: started.elapsed(),
        }
    }

    /// How long taking this snapshot took (on a runtime thread, during the phase it measures).
    pub fn took(&self) -> std::time::Duration {
        self.took
    }

    /// The share of the machine's CPU time taken by the hypervisor between `self` and `later`;
    /// `None` without `/proc/stat`.
    pub fn steal(&self, later: &Snapshot) -> Option<f64> {
        self.cpu.zip(later.cpu).and_then(|(a, b)| a.steal_share(&b))
    }

    /// The histograms' means between `self` and `later`, for those observed in between.
    pub fn timings(&self, later: &Snapshot) -> Vec<Timing> {
        let mut out = Vec::new();
        for ((agency, key), now) in &later.histograms {
            let before = self
                .histograms
                .get(&(agency.clone(), key.clone()))
                .cloned()
                .unwrap_or_default();
            let count = now.count.saturating_sub(before.count);
            if count == 0 {
                continue;
            }
            let name = key.split('{').next().unwrap_or_default();
            let (meaning, short) = HISTOGRAMS
                .iter()
                .find(|(n, ..)| *n == name)
                .map_or(("", ""), |(_, m, s)| (*m, *s));
            let seconds = name.ends_with("_seconds");
            let scale = if seconds { 1000.0 } else { 1.0 };
            let mean = (now.sum - before.sum) / count as f64 * scale;
            // The first bucket whose count over the phase reaches 99 % of the observations.
            let p99_at_most = now.buckets.iter().find_map(|(bound, cumulative)| {
                let earlier = before
                    .buckets
                    .iter()
                    .find(|(b, _)| b == bound)
                    .map_or(0, |(_, c)| *c);
                (cumulative.saturating_sub(earlier) * 100 >= count * 99).then_some(bound * scale)
            });
            out.push(Timing {
                agency: agency.clone(),
                metric: key.clone(),
                meaning,
                short,
                count,
                mean,
                p99_at_most,
                unit: if seconds { "ms" } else { "" },
            });
        }
        out
    }

    /// CPU seconds all of the process's threads used between `self` and `later` (threads that
    /// ended in between are not counted).
    pub fn cpu_seconds(&self, later: &Snapshot) -> f64 {
        let ticks: u64 = later
            .threads
            .iter()
            .map(|(thread, ticks)| {
                ticks.saturating_sub(self.threads.get(thread).copied().unwrap_or(0))
            })
            .sum();
        ticks as f64 / USER_HZ
    }

    /// CPU time per kind of thread between `self` and `later`, busiest first.
    pub fn threads(&self, later: &Snapshot) -> Vec<ThreadTime> {
        let elapsed = later
            .at
            .duration_since(self.at)
            .as_secs_f64()
            .max(f64::EPSILON);
        let mut kinds: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for (thread, ticks) in &later.threads {
            let used = ticks.saturating_sub(self.threads.get(thread).copied().unwrap_or(0));
            let name = thread.split_once('#').map_or(thread.as_str(), |(n, _)| n);
            let name = name
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
                .to_owned();
            let kind = kinds.entry(name).or_default();
            kind.0 += 1;
            kind.1 += used;
        }
        let mut out: Vec<ThreadTime> = kinds
            .into_iter()
            .map(|(name, (threads, ticks))| ThreadTime {
                name,
                threads,
                cores: ticks as f64 / USER_HZ / elapsed,
            })
            .collect();
        out.sort_by(|a, b| b.cores.total_cmp(&a.cores));
        out
    }
}

// === impl CpuClock ===

impl CpuClock {
    /// The clock now; `None` where `/proc/stat` cannot be read or parsed.
    pub fn now() -> Option<CpuClock> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        CpuClock::parse(&stat)
    }

    /// From the text of `/proc/stat`: user, nice, system, idle, iowait, irq, softirq and steal
    /// ticks (guest time is already inside user).
    fn parse(stat: &str) -> Option<CpuClock> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let steal = *ticks.get(7)?;
        Some(CpuClock {
            steal,
            total: ticks.iter().sum(),
        })
    }

    /// The share of the CPU time from `self` to `later` that was stolen; `None` if no time passed.
    pub fn steal_share(&self, later: &CpuClock) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|t| *t > 0)?;
        Some(later.steal.saturating_sub(self.steal) as f64 / total as f64)
    }
}

/// Snapshots of the agencies' histograms, the threads' CPU time and the machine's clock at the
/// start of each `window` from now for `duration`, and one at the end: window `i` lies between
/// snapshots `i` and `i + 1`. Each snapshot reads the registries and `/proc` on a runtime
/// thread; the report prints how long they took in all.
pub async fn sample_windows(
    agencies: Vec<(String, prometheus::Registry)>,
    window: std::time::Duration,
    duration: std::time::Duration,
) -> Vec<Snapshot> {
    let windows = (duration.as_micros() / window.as_micros().max(1)) as usize + 1;
    let agencies: Vec<(&str, &prometheus::Registry)> =
        agencies.iter().map(|(a, r)| (a.as_str(), r)).collect();
    let mut ticks = tokio::time::interval(window);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    ticks.tick().await;
    let mut out = Vec::with_capacity(windows + 1);
    out.push(Snapshot::take(&agencies));
    while out.len() <= windows {
        ticks.tick().await;
        out.push(Snapshot::take(&agencies));
    }
    out
}

/// User plus system clock ticks of each live thread, keyed `name#tid`.
fn thread_ticks() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `tid (name) state ...`: the name may hold spaces and parentheses, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat.get(open + 1..close).unwrap_or_default();
        let fields: Vec<&str> = stat
            .get(close + 1..)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        // After the name: state is field 3 of stat(5), utime 14 and stime 15.
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.insert(
            format!("{name}#{}", task.file_name().to_string_lossy()),
            ticks(11) + ticks(12),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_read_from_proc_stat() {
        let before =
            CpuClock::parse("cpu  100 5 50 800 10 0 5 30 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n").unwrap();
        let after = CpuClock::parse("cpu  150 5 70 900 10 0 5 50 0 0\n").unwrap();
        assert_eq!((before.steal, before.total), (30, 1000));
        assert_eq!(before.steal_share(&after), Some(20.0 / 190.0));
        assert_eq!(after.steal_share(&after), None);
        assert!(
            CpuClock::parse("cpu0 1 2 3\n").is_none()
                && CpuClock::parse("cpu  1 2 x 4 5 6 7 8\n").is_none()
        );
    }
}
