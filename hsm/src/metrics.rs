//! Prometheus metric families of this crate, all prefixed `backbone_hsm_`.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The metric families of key stores and batch signers.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Signatures made by a token or software key, by store kind and result.
    pub signatures: IntCounterVec,
    /// Time of one token or software signature.
    pub sign_duration: HistogramVec,
    /// Times a PKCS#11 store re-opened its sessions and logged in again, by token.
    pub reconnects: IntCounterVec,
    /// Messages covered by one batch signature.
    pub batch_size: HistogramVec,
    /// Time from a batch request's arrival to its answer.
    pub batch_wait: HistogramVec,
}

/// Labels of [`Metrics::signatures`].
#[derive(Clone, Copy, Debug)]
pub struct SignLabels<'a> {
    /// "pkcs11" or "software".
    pub store: &'a str,
    /// The algorithm name.
    pub algorithm: &'a str,
    /// "ok" or "error".
    pub result: &'a str,
}

impl Metrics {
    /// Creates the families and registers them in `registry`.
    ///
    /// # Errors
    ///
    /// When a family of the same name is already registered.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let signatures = IntCounterVec::new(
            Opts::new(
                "backbone_hsm_signatures_total",
                "Signatures made by a key store",
            ),
            &["store", "algorithm", "result"],
        )?;
        // From 20 µs (software Ed25519) to 1 s (a network HSM that is struggling).
        let sign_duration = HistogramVec::new(
            HistogramOpts::new(
                "backbone_hsm_sign_duration_seconds",
                "Time of one key-store signature",
            )
            .buckets(vec![
                20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3, 0.2, 1.0,
            ]),
            &["store"],
        )?;
        let reconnects = IntCounterVec::new(
            Opts::new(
                "backbone_hsm_reconnects_total",
                "Times a token's sessions were re-opened after a loss",
            ),
            &["token"],
        )?;
        // Powers of four up to the largest batch.
        let batch_size = HistogramVec::new(
            HistogramOpts::new(
                "backbone_hsm_batch_size_messages",
                "Messages covered by one batch signature",
            )
            .buckets(vec![1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
            &["key"],
        )?;
        // The batch signer targets a p99 under 5 ms; resolve well below and above that.
        let batch_wait = HistogramVec::new(
            HistogramOpts::new(
                "backbone_hsm_batch_wait_seconds",
                "Time a caller waits for its batch signature",
            )
            .buckets(vec![
                100e-6, 250e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1.0,
            ]),
            &["key"],
        )?;
        registry.register(Box::new(signatures.clone()))?;
        registry.register(Box::new(sign_duration.clone()))?;
        registry.register(Box::new(reconnects.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(batch_wait.clone()))?;
        Ok(Metrics {
            signatures,
            sign_duration,
            reconnects,
            batch_size,
            batch_wait,
        })
    }

    /// Counts one signature.
    pub fn count_signature(&self, labels: SignLabels<'_>) {
        self.signatures
            .with_label_values(&[labels.store, labels.algorithm, labels.result])
            .inc();
    }
}
