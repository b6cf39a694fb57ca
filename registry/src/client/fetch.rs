//! Downloading the configuration: each anchor URL in turn, then exponential back-off until one
//! answers; on success, wait for the refresh period.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{Accepted, ConfClient};
use crate::Error;
use crate::conf::MAX_CONF_LEN;

/// How often a client looks for a new version: as often as the registry makes one
/// ([`crate::server::DEFAULT_REGENERATE_EVERY`]), so a revocation arrives within two minutes.
pub const DEFAULT_REFRESH_EVERY: Duration = Duration::from_secs(60);
/// First wait after every URL failed: short, since a registry restart takes seconds.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between failed rounds: the refresh period, so back-off never makes a client
/// slower to recover than its normal schedule.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Time allowed for one download, connection included: a 16 MiB document on a slow link.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the refresh loop.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Wait after a successful round, [`DEFAULT_REFRESH_EVERY`].
    pub refresh_every: Duration,
    /// First back-off, [`DEFAULT_BACKOFF_MIN`].
    pub backoff_min: Duration,
    /// Longest back-off, [`DEFAULT_BACKOFF_MAX`].
    pub backoff_max: Duration,
    /// Per-download timeout, [`DEFAULT_FETCH_TIMEOUT`].
    pub timeout: Duration,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            refresh_every: DEFAULT_REFRESH_EVERY,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }
}

/// Tries each anchor URL in order and accepts the first configuration that verifies.
///
/// # Errors
///
/// [`Error::Fetch`] naming every URL and why it failed (unreachable, HTTP status, too large, or
/// refused by verification: a bad signature or a rollback counts as a failed URL).
pub async fn refresh_once(
    client: &ConfClient,
    http: &reqwest::Client,
    now: SystemTime,
) -> Result<Accepted, Error> {
    let mut failures = Vec::new();
    for url in &client.anchor().urls {
        match download(http, url)
            .await
            .and_then(|bytes| client.accept(&bytes, now))
        {
            Ok(accepted) => return Ok(accepted),
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    Err(Error::Fetch(failures.join("; ")))
}

/// Refreshes until `stop` turns true: every `refresh_every` after a success, with exponential
/// back-off (doubling from `backoff_min` to `backoff_max`) after a failed round. `clock` gives
/// the time each answer is checked against.
pub async fn run(
    client: Arc<ConfClient>,
    config: FetchConfig,
    clock: fn() -> SystemTime,
    mut stop: watch::Receiver<bool>,
) {
    let http = match reqwest::Client::builder().timeout(config.timeout).build() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client; the configuration will not refresh");
            return;
        }
    };
    let mut backoff = config.backoff_min;
    loop {
        let wait = match refresh_once(&client, &http, clock()).await {
            Ok(accepted) => {
                tracing::debug!(?accepted, "global configuration refreshed");
                backoff = config.backoff_min;
                config.refresh_every
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "global configuration refresh failed");
                let wait = backoff;
                backoff = (backoff * 2).min(config.backoff_max);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn download(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, Error> {
    let limit = MAX_CONF_LEN + 1024;
    let mut response = http
        .get(url)
        .send()
        .await
        .map_err(|e| Error::Fetch(e.to_string()))?;
    if !response.status().is_success() {
        return Err(Error::Fetch(format!("HTTP status {}", response.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Error::Fetch(e.to_string()))?
    {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(Error::Fetch(format!(
                "response is over the limit of {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
