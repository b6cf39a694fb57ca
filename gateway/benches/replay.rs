//! The replay guard while it grows: admits distinct message ids one after another and prints the
//! mean time per admit and the longest single admit, beside the same inserts into one
//! `HashSet` (what the guard held before it was split into shards). The longest admit is the
//! pause every other request for that part of the guard waits through while its table doubles.
//!
//! `cargo bench -p backbone-gateway --bench replay` grows to 120,000 ids (about half a minute of a
//! busy gateway) and to 3,000,000 (two replay windows at 5,000 requests a second); under
//! `cargo test` it grows to 20,000, as a smoke test.
// A benchmark: failing loudly is fine.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use backbone_gateway::replay::{DEFAULT_WINDOW, ReplayGuard};

const CLIENT: &str = "EE/COM/10000001/pharmacy";

fn main() {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let sizes: &[usize] = if bench {
        &[120_000, 3_000_000]
    } else {
        &[20_000]
    };
    println!(
        "{:<28} {:>10} {:>14} {:>16} {:>12}",
        "growing to", "ids", "ns per admit", "longest admit", "over 1 ms"
    );
    for &count in sizes {
        let ids: Vec<String> = (0..count as u128)
            .map(|i| format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        report("one HashSet (baseline)", count, grow_set(&ids));
        report("ReplayGuard", count, grow_guard(&ids));
    }
}

/// (total, longest, how many over 1 ms)
type Timings = (Duration, Duration, usize);

fn grow_set(ids: &[String]) -> Timings {
    let mut set = HashSet::new();
    time_each(ids, |id| {
        assert!(set.insert((CLIENT.to_owned(), id.to_owned())));
    })
}

fn grow_guard(ids: &[String]) -> Timings {
    let now = 1_000_000;
    let guard = ReplayGuard::new(DEFAULT_WINDOW, now);
    let timings = time_each(ids, |id| guard.admit(CLIENT, id, now, now).unwrap());
    assert_eq!(guard.len(), ids.len());
    timings
}

fn time_each(ids: &[String], mut admit: impl FnMut(&str)) -> Timings {
    let (mut longest, mut over) = (Duration::ZERO, 0);
    let start = Instant::now();
    for id in ids {
        let t = Instant::now();
        admit(black_box(id));
        let took = t.elapsed();
        longest = longest.max(took);
        over += usize::from(took > Duration::from_millis(1));
    }
    (start.elapsed(), longest, over)
}

fn report(name: &str, count: usize, (total, longest, over): Timings) {
    let per = total.as_secs_f64() * 1e9 / count as f64;
    println!(
        "{name:<28} {count:>10} {per:>14.0} {:>13.2} ms {over:>12}",
        longest.as_secs_f64() * 1e3
    );
}
