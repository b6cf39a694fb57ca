//! The running aggregator: it accepts requests into the open round, closes a round every round
//! length, commits its root to the calendar, signs the calendar root, publishes at each interval
//! boundary, and only then answers each request with its signature.
//!
//! ```text
//!  sign(requests) ─mpsc─▶ driver task ─ tick ─▶ Round::close ─▶ Calendar::append (synced)
//!        ▲                                                         │
//!        └──── oneshot: SignedRound, indexes ◀── CalendarSigner::sign ◀───┘  (+ publish at boundaries)
//!   the caller's task reads its own chains out of the round: SignedRound::signature(index)
//! ```
//!
//! A caller with several requests (a PDU's) submits them together: one queue entry and one
//! answer for all of them, each request still its own leaf.
//!
//! Once a round is committed and signed, its submissions are answered on one blocking thread in
//! the order they came, while the next round fills; a caller may have its whole response written
//! there ([`Handle::sign_all_with`]), so that the clients that asked first, and waited longest,
//! are answered first instead of all answers being written at once in whatever order the async
//! workers pick them up.
//!
//! ```text
//! ```
//!
//! Stages and what a crash loses: *accepted* (in memory: lost, the client had no answer),
//! *committed* (the leaf is in the calendar: kept; a client without an answer asks again and
//! gets a later leaf), *signed and answered* (the client holds a signature the calendar proves).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backbone_timestamping_verify::publication::PublicationData;
use backbone_timestamping_verify::signature::{Anchor, Signature};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::authority::CalendarSigner;
use crate::calendar::{Calendar, CalendarStore};
use crate::error::Error;
use crate::publications_file::PublicationsFileSigner;
use crate::round::{Limits, Recycler, Request, Round, SignedRound};

/// The round length unless configured otherwise: one calendar leaf per second, as in KSI.
pub const DEFAULT_ROUND: Duration = Duration::from_secs(1);
/// The publication interval unless configured otherwise: hourly, as the design asks.
pub const DEFAULT_PUBLICATION_INTERVAL: u64 = 3600;
/// Submissions (one request, or a PDU's requests) queued towards the driver before callers
/// wait: a few rounds' worth at the sized load.
pub const DEFAULT_QUEUE: usize = 65_536;

/// The service's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// How often a round closes; whole seconds, at least one.
    pub round: Duration,
    /// Round limits.
    pub limits: Limits,
    /// Seconds between publications; the calendar root at each multiple is published.
    pub publication_interval: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            round: DEFAULT_ROUND,
            limits: Limits::default(),
            publication_interval: DEFAULT_PUBLICATION_INTERVAL,
        }
    }
}

/// A handle on the running service; cheap to clone.
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

type SharedCalendar = Mutex<Calendar<Box<dyn CalendarStore>>>;

#[derive(Debug)]
struct Shared {
    calendar: SharedCalendar,
    signer: CalendarSigner,
    config: Config,
    publications_file: Option<PublicationsFileSigner>,
}

/// Requests on their way to the driver, and where their answers go.
pub(crate) struct Submission {
    pub(crate) requests: Vec<Request>,
    pub(crate) reply: Reply,
}

/// The answer to one request: its signed round and its position in it, or why it was refused
/// or its round failed. Read the signature with [`SignedRound::signature`] or
/// [`SignedRound::encode_signature`].
pub type Placed = Result<(Arc<SignedRound>, usize), Arc<Error>>;

/// What receives the answers to one submission, in the order of its requests: called once,
/// on the thread that answers the round.
pub(crate) type Reply = Box<dyn FnOnce(Vec<Placed>) + Send>;

/// A submission in the open round: each request's position, or why the round refused it.
pub(crate) struct Waiting {
    reply: Reply,
    positions: Vec<Result<usize, Arc<Error>>>,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission")
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

/// Starts the driver on the current tokio runtime.
///
/// # Errors
///
/// [`Error::Config`] for a round shorter than a second or a zero publication interval.
pub fn spawn(
    calendar: Calendar<Box<dyn CalendarStore>>,
    signer: CalendarSigner,
    config: Config,
) -> Result<Running, Error> {
    start(calendar, signer, config, None)
}

/// Starts the driver like [`spawn`], and keeps a signed publications file: written once now and
/// again after each publication.
///
/// # Errors
///
/// As [`spawn`]; [`Error::Hsm`] or [`Error::File`] if the first file cannot be signed or written.
pub fn spawn_publishing(
    calendar: Calendar<Box<dyn CalendarStore>>,
    signer: CalendarSigner,
    config: Config,
    publications_file: PublicationsFileSigner,
) -> Result<Running, Error> {
    let publications = calendar.publications()?;
    publications_file.publish(
        std::slice::from_ref(signer.certificate()),
        &publications,
        now(),
    )?;
    start(calendar, signer, config, Some(publications_file))
}

fn start(
    calendar: Calendar<Box<dyn CalendarStore>>,
    signer: CalendarSigner,
    config: Config,
    publications_file: Option<PublicationsFileSigner>,
) -> Result<Running, Error> {
    if config.round < Duration::from_secs(1) || config.round.subsec_nanos() != 0 {
        return Err(Error::Config {
            key: "round",
            value: format!("{:?}", config.round),
            reason: "must be a whole number of seconds, at least 1: the calendar has one leaf per second".to_owned(),
        });
    }
    if config.publication_interval == 0 {
        return Err(Error::Config {
            key: "publication_interval",
            value: "0".to_owned(),
            reason: "must be at least one second".to_owned(),
        });
    }
    let (submit, receive) = mpsc::channel(DEFAULT_QUEUE);
    let shared = Arc::new(Shared {
        calendar: Mutex::new(calendar),
        signer,
        config,
        publications_file,
    });
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(drive(Arc::clone(&shared), receive, stopped));
    Ok(Running {
        handle: Handle { submit, shared },
        stop,
        task,
    })
}

// === impl Handle ===

impl Handle {
    /// Signs `request` in the next round; returns once its leaf is committed and signed.
    ///
    /// # Errors
    ///
    /// [`Error::Request`] or [`Error::Pushback`] for a refused request, [`Error::ShuttingDown`],
    /// and the round's failure (shared by every request of the round).
    pub async fn sign(&self, request: Request) -> Result<Signature, Arc<Error>> {
        Round::check(&self.shared.config.limits, &request, now()).map_err(Arc::new)?;
        let (round, index) = submit_one(&self.submit, request).await?;
        round.signature(index).map_err(Arc::new)
    }

    /// Signs `requests` in the next round, all in one submission; returns once their leaves are
    /// committed and signed, with one answer per request in their order.
    ///
    /// # Errors
    ///
    /// [`Error::ShuttingDown`] for all of them; otherwise each answer carries its own refusal
    /// ([`Error::Request`], [`Error::Pushback`]) or the round's failure.
    pub async fn sign_all(&self, requests: Vec<Request>) -> Result<Vec<Placed>, Arc<Error>> {
        submit(&self.submit, requests).await
    }

    /// Signs `requests` like [`Handle::sign_all`] and turns their answers into `T` with
    /// `respond` before returning it. `respond` runs on the thread that answers the round (not
    /// an async worker), once the round is committed and signed, for each submission in the
    /// order they came: a caller that writes its whole response there gets it in turn, the
    /// first to ask first.
    ///
    /// # Errors
    ///
    /// [`Error::ShuttingDown`] if the service stopped before answering; `respond` did not run.
    pub async fn sign_all_with<T, F>(
        &self,
        requests: Vec<Request>,
        respond: F,
    ) -> Result<T, Arc<Error>>
    where
        T: Send + 'static,
        F: FnOnce(Vec<Placed>) -> T + Send + 'static,
    {
        submit_with(&self.submit, requests, respond).await
    }

    /// The certificate of the calendar signing key, with its id.
    pub fn certificate(
        &self,
    ) -> &backbone_timestamping_verify::publications_file::CertificateRecord {
        self.shared.signer.certificate()
    }

    /// Every publication, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the calendar cannot be read.
    pub fn publications(&self) -> Result<Vec<PublicationData>, Error> {
        self.calendar().publications()
    }

    /// The latest signed publications file, when the service keeps one ([`spawn_publishing`]).
    pub fn publications_file(&self) -> Option<Arc<Vec<u8>>> {
        self.shared
            .publications_file
            .as_ref()
            .and_then(PublicationsFileSigner::latest)
    }

    /// The last second in the calendar.
    pub fn head(&self) -> Option<u64> {
        self.calendar().head()
    }

    /// The calendar chain from second `time` to `publication_time` (the head when `None`).
    ///
    /// # Errors
    ///
    /// [`Error::NotInCalendar`], [`Error::Store`].
    pub fn extend(
        &self,
        time: u64,
        publication_time: Option<u64>,
    ) -> Result<backbone_timestamping_verify::signature::CalendarChain, Error> {
        let calendar = self.calendar();
        let to = publication_time
            .or(calendar.head())
            .ok_or(Error::NotInCalendar { time, size: 0 })?;
        calendar.chain(time, to)
    }

    /// The service's settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    fn calendar(&self) -> std::sync::MutexGuard<'_, Calendar<Box<dyn CalendarStore>>> {
        self.shared
            .calendar
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Running ===

impl Running {
    /// Stops accepting (other handles get [`Error::ShuttingDown`]), answers the requests already
    /// queued in one last round, and waits for the driver.
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
    let mut answering = tokio::task::JoinSet::new();
    let mut open = true;
    let mut stopping = false;
    while open || !waiting.is_empty() {
        tokio::select! {
            _ = &mut stopped, if !stopping => {
                // Refuse new requests; those already queued are still received below.
                stopping = true;
                receive.close();
            },
            submission = receive.recv(), if open => match submission {
                Some(submission) => accept(&mut round, submission, &mut waiting),
                None => open = false,
            },
            _ = ticker.tick() => {
                let time = now();
                let head = shared.calendar.lock().unwrap_or_else(PoisonError::into_inner).head();
                if head.is_some_and(|h| time <= h) {
                    // The clock is behind the calendar (a restart right after a crash, or the
                    // clock stepped back): keep the round open until time passes the head.
                    tracing::warn!(time, head, "clock not past the calendar head; round kept open");
                    continue;
                }
                // The next round has room for as many requests as this one: at a steady rate it
                // never reallocates as it fills.
                let next = Round::recycled(shared.config.limits, round.len(), &recycler);
                let closing = std::mem::replace(&mut round, next);
                let replies = std::mem::take(&mut waiting);
                let worker = Arc::clone(&shared);
                let started = std::time::Instant::now();
                let outcome = tokio::task::spawn_blocking(move || close(&worker, closing, time)).await;
                let outcome = outcome.unwrap_or_else(|_| Err(Error::Unreachable("round task panicked")));
                let closed = started.elapsed();
                // Answered in the order the submissions came, off the async threads, while the
                // next round fills: a submission's reply may encode its whole response, and the
                // clients that asked first, and so waited longest, get theirs first.
                answering.spawn_blocking(move || {
                    answer(replies, outcome);
                    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                    tracing::debug!(time, closed_ms = ms(closed), answered_ms = ms(started.elapsed()), "round answered");
                });
            },
            Some(_) = answering.join_next(), if !answering.is_empty() => {},
        }
    }
    while answering.join_next().await.is_some() {}
}

/// Closes the round as second `time`: tree, calendar commit, publication, signature. `None` for
/// a round without requests.
fn close(shared: &Shared, round: Round, time: u64) -> Result<Option<Arc<SignedRound>>, Error> {
    let interval = shared.config.publication_interval;
    let mut calendar = shared
        .calendar
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let due = time - time % interval;
    let last_published = calendar.publications()?.last().map(|p| p.time);
    let publish = due > 0 && last_published.is_none_or(|p| due > p);
    let started = std::time::Instant::now();
    let requests = round.len();
    let closed = round.close(time)?;
    let tree = started.elapsed();
    let root = closed.root();
    if publish && calendar.head().is_none_or(|h| due > h) && (due < time || root.is_none()) {
        calendar.append(due, None)?;
    }
    let signed = match &root {
        Some(root) => {
            let calendar_root = calendar.append(time, Some(root))?;
            let committed = started.elapsed();
            let chain = calendar.chain(time, time)?;
            let record = shared
                .signer
                .sign(PublicationData::new(time, calendar_root))?;
            let signed = SignedRound::in_calendar(closed, (chain, Anchor::CalendarAuth(record)));
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            tracing::debug!(
                time,
                requests,
                tree_ms = ms(tree),
                committed_ms = ms(committed),
                signed_ms = ms(started.elapsed()),
                "round closed"
            );
            Some(Arc::new(signed))
        }
        None => None,
    };
    if publish {
        let publication = calendar.publish(due)?;
        tracing::info!(time = due, publication = %publication.to_publication_string(), "calendar root published");
        let publications = calendar.publications()?;
        drop(calendar);
        write_publications_file(shared, &publications);
    }
    Ok(signed)
}

/// Rewrites the publications file after a publication. A failure is logged, not returned: the
/// publication is committed, the previous file stays in place, and the next one includes it.
fn write_publications_file(shared: &Shared, publications: &[PublicationData]) {
    let Some(file) = &shared.publications_file else {
        return;
    };
    match file.publish(
        std::slice::from_ref(shared.signer.certificate()),
        publications,
        now(),
    ) {
        Ok(bytes) => {
            tracing::info!(publications = publications.len(), bytes = bytes.len(), path = ?file.path(), "publications file signed and written")
        }
        Err(e) => {
            tracing::error!(error = %e, path = ?file.path(), "cannot write the publications file; the previous one stays")
        }
    }
}

/// Queues `requests` as one submission and waits for their answers.
pub(crate) async fn submit(
    queue: &mpsc::Sender<Submission>,
    requests: Vec<Request>,
) -> Result<Vec<Placed>, Arc<Error>> {
    submit_with(queue, requests, |placed| placed).await
}

/// Queues `requests` as one submission and waits for `respond`'s result over their answers.
pub(crate) async fn submit_with<T, F>(
    queue: &mpsc::Sender<Submission>,
    requests: Vec<Request>,
    respond: F,
) -> Result<T, Arc<Error>>
where
    T: Send + 'static,
    F: FnOnce(Vec<Placed>) -> T + Send + 'static,
{
    let (sender, answer) = oneshot::channel();
    let reply: Reply = Box::new(move |placed| {
        let _ = sender.send(respond(placed));
    });
    queue
        .send(Submission { requests, reply })
        .await
        .map_err(|_| Arc::new(Error::ShuttingDown))?;
    answer.await.map_err(|_| Arc::new(Error::ShuttingDown))
}

/// Queues one request and waits for its round and position.
pub(crate) async fn submit_one(queue: &mpsc::Sender<Submission>, request: Request) -> Placed {
    let placed = submit(queue, vec![request]).await?;
    placed.into_iter().next().unwrap_or_else(|| {
        Err(Arc::new(Error::Unreachable(
            "a submission answered without its request",
        )))
    })
}

/// Pushes a submission's requests into the open round. Unless the round refused all of them,
/// the submission waits for the round; otherwise it is answered now.
pub(crate) fn accept(round: &mut Round, submission: Submission, waiting: &mut Vec<Waiting>) {
    let Submission { requests, reply } = submission;
    let at = now();
    let positions: Vec<_> = requests
        .iter()
        .map(|r| round.push(r, at).map_err(Arc::new))
        .collect();
    if positions.iter().any(Result::is_ok) {
        waiting.push(Waiting { reply, positions });
    } else {
        reply(
            positions
                .into_iter()
                .filter_map(Result::err)
                .map(Err)
                .collect(),
        );
    }
}

/// Sends each waiting submission its round and positions, or the round's failure; a request
/// the round refused keeps its own refusal.
pub(crate) fn answer(waiting: Vec<Waiting>, outcome: Result<Option<Arc<SignedRound>>, Error>) {
    let placed: Result<Arc<SignedRound>, Arc<Error>> = match outcome {
        Ok(Some(round)) => Ok(round),
        // An empty round has no one waiting; should one be, it is not left hanging.
        Ok(None) => Err(Arc::new(Error::Unreachable(
            "a request waited on a round without requests",
        ))),
        Err(e) => {
            tracing::error!(error = %e, "round failed; its requests are answered with the error");
            Err(Arc::new(e))
        }
    };
    for Waiting { reply, positions } in waiting {
        let answers = positions
            .into_iter()
            .map(|position| {
                let index = position?;
                match &placed {
                    Ok(round) => Ok((Arc::clone(round), index)),
                    Err(e) => Err(Arc::clone(e)),
                }
            })
            .collect();
        reply(answers);
    }
}

/// Seconds since 1970 by the system clock (the only clock read in this crate).
pub fn now() -> u64 {
    now_millis().0
}

/// Seconds since 1970 and the milliseconds into the second, by the system clock.
pub fn now_millis() -> (u64, u32) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_millis()))
}
