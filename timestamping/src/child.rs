//! A child aggregator: it closes rounds like the top aggregator, but sends each round root to a
//! parent aggregator instead of a calendar, and finishes its requests' signatures with the
//! parent's answer.
//!
//! Spec: Guardtime, "KSI Data Formats", "Aggregation hash chain" (chain index: one entry per
//! aggregator, the lower chain's index continuing the upper's) and "Aggregator PDU". The parent
//! is any aggregator that speaks PDU v2: this crate's [`crate::http`] router, over a calendar or
//! over another child.
//!
//! ```text
//!  sign(request) ─mpsc─▶ driver ─ tick ─▶ Round::close ─▶ root at level L
//!                                    └▶ task: aggregator PDU {root, level L}, the parent login ─▶ parent
//!                                          ◀── parent's chains, calendar chain, record
//!        ◀── oneshot: SignedRound, index ──┘ the parent's first link continues at level L;
//!                                            one signature verified (internal policy) first
//!   the caller's task: own chain, re-timed to the parent's time, parent's chain index prefixed
//! ```
//!
//! The parent puts the child's login id in its chain as metadata, and sees the round root as a
//! client's tree of height L: its first link's level correction is L, as for any client with
//! its own tree. In the combined signature that chain starts where the child's ends (level L),
//! so the child lowers that correction by L; the hashes do not change.
//!
//! Stages and what a crash loses: *accepted* (in memory: lost, the client had no answer),
//! *sent to the parent* (in memory: lost; the parent may commit a leaf that no one holds a
//! signature for, which is harmless), *answered*. The driver does not wait for the parent: the
//! next round fills while the previous one is out. If the parent fails or does not answer
//! within [`Parent::timeout`], every request of that round gets [`Error::Parent`] (KSI status
//! 0x300, or 0x301 for a timeout) and the next round asks again.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backbone_timestamping_verify::pdu::{AggregationRequest, AggregationResponse, Header};
use backbone_timestamping_verify::signature::{Anchor, Signature};
use backbone_timestamping_verify::verify::{self, Context, Outcome, Policy};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::client::{self, ClientError};
use crate::error::{Error, ParentError};
use crate::round::{ClosedRound, Limits, Recycler, Request, Round, SignedRound};
use crate::service::{self, Submission};

/// How long a child waits for its parent's answer unless configured otherwise: the parent
/// answers after its own round closes (1 s) and commits; ten times that is plenty, and short
/// enough for the child's clients to see an error while they still wait.
pub const DEFAULT_PARENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a child sends its round roots, and how it logs in there.
#[derive(Clone)]
pub struct Parent {
    /// The parent's address.
    pub addr: SocketAddr,
    /// The path of the parent's aggregator PDU route (`/`).
    pub path: String,
    /// The login id the parent knows this child by; it becomes the child's metadata in the
    /// parent's chain.
    pub login_id: String,
    /// The HMAC key of that login id.
    pub key: Vec<u8>,
    /// How long to wait for an answer to one round root.
    pub timeout: Duration,
}

/// A child aggregator's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// How often a round closes and its root goes to the parent.
    pub round: Duration,
    /// Round limits. The parent must accept the round root's level: its own maximum input
    /// level must be at least this one's plus log₂ of the largest round.
    pub limits: Limits,
}

/// A handle on a running child aggregator; cheap to clone.
#[derive(Clone, Debug)]
pub struct Handle {
    submit: mpsc::Sender<Submission>,
    shared: Arc<Shared>,
}

/// The driver task; [`Running::shutdown`] stops it after the open round is answered.
#[derive(Debug)]
pub struct Running {
    /// A handle for callers.
    pub handle: Handle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    parent: Parent,
    config: Config,
    /// The PDU header's instance id: the start time, so that it grows with every restart.
    instance: u64,
    /// Request and message ids towards the parent.
    sent: AtomicU64,
}

/// Starts a child aggregator's driver on the current tokio runtime.
///
/// # Errors
///
/// [`Error::Config`] for a zero round length or timeout.
pub fn spawn(parent: Parent, config: Config) -> Result<Running, Error> {
    if config.round.is_zero() {
        return Err(Error::Config {
            key: "round",
            value: "0".to_owned(),
            reason: "must be longer than zero".to_owned(),
        });
    }
    if parent.timeout.is_zero() {
        return Err(Error::Config {
            key: "parent_timeout",
            value: "0".to_owned(),
            reason: "must be longer than zero".to_owned(),
        });
    }
    let (submit, receive) = mpsc::channel(service::DEFAULT_QUEUE);
    let shared = Arc::new(Shared {
        parent,
        config,
        instance: service::now(),
        sent: AtomicU64::new(1),
    });
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(drive(Arc::clone(&shared), receive, stopped));
    Ok(Running {
        handle: Handle { submit, shared },
        stop,
        task,
    })
}

// === impl Parent ===

impl Parent {
    /// The parent at `url` (`http://HOST:PORT/PATH`, the path `/` if absent), resolved now,
    /// with the default timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for another scheme, a missing port or a host that does not resolve.
    pub fn from_url(url: &str, login_id: &str, key: Vec<u8>) -> Result<Parent, Error> {
        let refuse = |reason: &str| Error::Config {
            key: "parent",
            value: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            refuse("must start with http:// (TLS to the parent is not supported)")
        })?;
        let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
        let addr = authority
            .to_socket_addrs()
            .map_err(|e| refuse(&format!("expected HOST:PORT: {e}")))?
            .next()
            .ok_or_else(|| refuse("the host has no address"))?;
        Ok(Parent {
            addr,
            path: path.to_owned(),
            login_id: login_id.to_owned(),
            key,
            timeout: DEFAULT_PARENT_TIMEOUT,
        })
    }

    /// The parent as a URL, for logs and errors.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parent")
            .field("url", &self.url())
            .field("login_id", &self.login_id)
            .field("key", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

// === impl Handle ===

impl Handle {
    /// Signs `request` in the next round; returns once the parent has answered that round.
    ///
    /// # Errors
    ///
    /// [`Error::Request`] or [`Error::Pushback`] for a refused request, [`Error::Parent`] when
    /// the parent failed the round, [`Error::ShuttingDown`].
    pub async fn sign(&self, request: Request) -> Result<Signature, Arc<Error>> {
        Round::check(&self.shared.config.limits, &request, service::now()).map_err(Arc::new)?;
        let (round, index) = service::submit_one(&self.submit, request).await?;
        round.signature(index).map_err(Arc::new)
    }

    /// Signs `requests` in the next round, all in one submission, as
    /// [`service::Handle::sign_all`]; returns once the parent has answered that round.
    ///
    /// # Errors
    ///
    /// [`Error::ShuttingDown`] for all of them; otherwise each answer carries its own refusal or
    /// the round's failure ([`Error::Parent`] when the parent failed it).
    pub async fn sign_all(
        &self,
        requests: Vec<Request>,
    ) -> Result<Vec<service::Placed>, Arc<Error>> {
        service::submit(&self.submit, requests).await
    }

    /// The parent this child sends its rounds to.
    pub fn parent(&self) -> &Parent {
        &self.shared.parent
    }

    /// The child's settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}

// === impl Running ===

impl Running {
    /// Stops accepting, answers the requests already queued in one last round, and waits for
    /// the parent's answers to every round still out.
    pub async fn shutdown(self) {
        let Running { handle, stop, task } = self;
        drop(handle);
        let _ = stop.send(());
        let _ = task.await;
    }
}

async fn drive(
    shared: Arc<Shared>,
    mut receive: mpsc::Receiver<Submission>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut ticker = tokio::time::interval(shared.config.round);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Each round fills the arrays of the round before last, answered by then.
    let recycler = Recycler::new();
    let mut round = Round::recycled(shared.config.limits, 0, &recycler);
    let mut waiting = Vec::new();
    let mut out = JoinSet::new();
    let (mut open, mut stopping) = (true, false);
    while open || !waiting.is_empty() {
        tokio::select! {
            _ = &mut stopped, if !stopping => {
                stopping = true;
                receive.close();
            },
            submission = receive.recv(), if open => match submission {
                Some(submission) => service::accept(&mut round, submission, &mut waiting),
                None => open = false,
            },
            _ = ticker.tick() => {
                if round.is_empty() {
                    continue;
                }
                let next = Round::recycled(shared.config.limits, round.len(), &recycler);
                let closing = std::mem::replace(&mut round, next);
                let replies = std::mem::take(&mut waiting);
                let worker = Arc::clone(&shared);
                // The parent answers after its own round: meanwhile this one keeps filling.
                out.spawn(async move { service::answer(replies, submit(&worker, closing).await.map(Some)) });
            },
            Some(_) = out.join_next(), if !out.is_empty() => {},
        }
    }
    while out.join_next().await.is_some() {}
}

/// Closes `round`, sends its root to the parent and attaches the answer.
async fn submit(shared: &Shared, round: Round) -> Result<Arc<SignedRound>, Error> {
    let time = service::now();
    let closed = tokio::task::spawn_blocking(move || round.close(time))
        .await
        .map_err(|_| Error::Unreachable("round task panicked"))??;
    let (root, level) = closed
        .root()
        .zip(closed.root_level())
        .ok_or(Error::Unreachable("a round with requests has no root"))?;
    let id = shared.sent.fetch_add(1, Ordering::Relaxed);
    let parent = shared.parent.clone();
    let header = Header {
        login_id: parent.login_id.as_str().into(),
        instance_id: Some(shared.instance),
        message_id: Some(id),
    };
    let request = AggregationRequest {
        request_id: id,
        hash: root,
        level: Some(u64::from(level)),
    };
    let failed = |source| Error::Parent {
        round: time,
        parent: shared.parent.url(),
        source,
    };
    let timeout = parent.timeout;
    let answered = tokio::task::spawn_blocking(move || {
        client::aggregate(
            parent.addr,
            &parent.path,
            header,
            &parent.key,
            request,
            parent.timeout,
        )
    })
    .await
    .map_err(|_| Error::Unreachable("parent call task panicked"))?;
    let response = answered.map_err(|e| failed(call_error(e, timeout)))?;
    let signed = attach(closed, level, response).map_err(failed)?;
    tracing::debug!(
        round = time,
        requests = signed.round().len(),
        level,
        "round answered by the parent"
    );
    Ok(Arc::new(signed))
}

/// The parent's answer as what lies above the round's root; checked by verifying the first
/// request's signature under the internal policy before any client sees one.
fn attach(
    closed: ClosedRound,
    level: u8,
    response: AggregationResponse,
) -> Result<SignedRound, ParentError> {
    let unusable = |why: &str| ParentError::Answer(why.to_owned());
    let mut above = response.aggregation_chains;
    // Lowest first: the chain with the longest index is the one the round root enters.
    above.sort_by_key(|c| std::cmp::Reverse(c.chain_index.len()));
    let lowest = above
        .first_mut()
        .ok_or_else(|| unusable("no aggregation chain"))?;
    let time = lowest.aggregation_time;
    let link = lowest
        .links
        .first_mut()
        .ok_or_else(|| unusable("an aggregation chain without links"))?;
    link.level_correction = link
        .level_correction
        .checked_sub(u64::from(level))
        .ok_or_else(|| {
            ParentError::Answer(format!(
                "first level correction {} is below the round root's level {level}",
                link.level_correction
            ))
        })?;
    let chain = response
        .calendar_chain
        .ok_or_else(|| unusable("no calendar chain"))?;
    let anchor = match (response.calendar_auth_record, response.publication_record) {
        (Some(record), _) => Anchor::CalendarAuth(record),
        (None, Some(record)) => Anchor::Publication(record),
        (None, None) => {
            return Err(unusable(
                "neither a calendar authentication record nor a publication record",
            ));
        }
    };
    let signed = SignedRound::under_parent(closed, time, above, (chain, anchor));
    let sample = signed
        .signature(0)
        .map_err(|e| ParentError::Answer(e.to_string()))?;
    let verdict = verify::verify(&sample, Policy::Internal, &Context::default());
    if verdict.outcome != Outcome::Ok {
        return Err(ParentError::Answer(format!(
            "the first signature does not verify: {verdict}"
        )));
    }
    Ok(signed)
}

fn call_error(error: ClientError, timeout: Duration) -> ParentError {
    match &error {
        ClientError::Io { source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            ParentError::Timeout(timeout)
        }
        ClientError::Http { source, .. } if source.is_timeout() => ParentError::Timeout(timeout),
        _ => ParentError::Call(error),
    }
}
