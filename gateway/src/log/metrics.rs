//! Prometheus metric families of the message log, all prefixed `backbone_gateway_log_`.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// The metric families of one message log.
#[derive(Clone, Debug)]
pub struct LogMetrics {
    /// Records made durable.
    pub records_appended: IntCounter,
    /// Time from an `append` call to its acknowledgement (the synced write included).
    pub append_duration: Histogram,
    /// Records written by one synced write (group commit).
    pub commit_batch_records: Histogram,
    /// Records not yet covered by a timestamped batch.
    pub unstamped_records: IntGauge,
    /// Seconds since the last successful batch stamp (since the log opened, before the first).
    pub seconds_since_last_stamp: Gauge,
    /// 1 while new exchanges are refused because timestamping has failed too long, else 0.
    pub refusing: IntGauge,
    /// Batch stamping attempts, by result ("ok" or "error").
    pub stamps: IntCounterVec,
}

// === impl LogMetrics ===

impl LogMetrics {
    /// Creates the families and registers them in `registry`.
    ///
    /// # Errors
    ///
    /// When a family of the same name is already registered.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::new()?;
        registry.register(Box::new(metrics.records_appended.clone()))?;
        registry.register(Box::new(metrics.append_duration.clone()))?;
        registry.register(Box::new(metrics.commit_batch_records.clone()))?;
        registry.register(Box::new(metrics.unstamped_records.clone()))?;
        registry.register(Box::new(metrics.seconds_since_last_stamp.clone()))?;
        registry.register(Box::new(metrics.refusing.clone()))?;
        registry.register(Box::new(metrics.stamps.clone()))?;
        Ok(metrics)
    }

    /// Families that no registry exports, for a log whose caller does not serve metrics.
    pub fn unregistered() -> Self {
        // Every name and bucket list below is valid: creating them cannot fail.
        #[allow(clippy::expect_used)]
        Self::new().expect("metric options are valid")
    }

    fn new() -> Result<Self, prometheus::Error> {
        let records_appended = IntCounter::new(
            "backbone_gateway_log_records_appended_total",
            "Message log records made durable",
        )?;
        // A synced write costs about 0.2 ms on an SSD; a group commit under load waits a few; a
        // struggling disk takes hundreds.
        let append_duration = Histogram::with_opts(
            HistogramOpts::new(
                "backbone_gateway_log_append_duration_seconds",
                "Time from a message log append to its durable acknowledgement",
            )
            .buckets(vec![
                100e-6, 250e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3, 100e-3, 0.5, 2.0,
            ]),
        )?;
        // Powers of four up to the largest group a commit takes.
        let commit_batch_records = Histogram::with_opts(
            HistogramOpts::new(
                "backbone_gateway_log_commit_batch_records",
                "Records written by one synced message log write",
            )
            .buckets(vec![1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
        )?;
        let unstamped_records = IntGauge::new(
            "backbone_gateway_log_unstamped_records",
            "Message log records not yet covered by a timestamped batch",
        )?;
        let seconds_since_last_stamp = Gauge::new(
            "backbone_gateway_log_seconds_since_last_stamp",
            "Seconds since the message log last had a batch timestamped",
        )?;
        let refusing = IntGauge::new(
            "backbone_gateway_log_refusing",
            "1 while new exchanges are refused because timestamping has failed for too long",
        )?;
        let stamps = IntCounterVec::new(
            Opts::new(
                "backbone_gateway_log_stamps_total",
                "Message log batch timestamping attempts",
            ),
            &["result"],
        )?;
        Ok(LogMetrics {
            records_appended,
            append_duration,
            commit_batch_records,
            unstamped_records,
            seconds_since_last_stamp,
            refusing,
            stamps,
        })
    }
}
