//! The running aggregator: it accepts requests into the open round, closes a round every round
//! length, commits its root to the calendar, signs the calendar root, publishes at each interval
//! boundary, and only then answers each request with its signature.
//!
//! ```text
//!  sign(request) ─mpsc─▶ driver task ─ tick ─▶ Round::close ─▶ Calendar::append (synced)
//!        ▲                                                         │
//!        └──── oneshot: SignedRound, index ◀── CalendarSigner::sign ◀───┘   (+ publish at boundaries)
//!   the caller's task reads its own chain out of the round: SignedRound::signature(index)
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
use crate::round::{Limits, Request, Round, SignedRound};

/// The round length unless configured otherwise: one calendar leaf per second, as in KSI.
pub const DEFAULT_ROUND: Duration = Duration::from_secs(1);
/// The publication interval unless configured otherwise: hourly, as the design asks.
pub const DEFAULT_PUBLICATION_INTERVAL: u64 = 3600;
/// Requests queued towards the driver before callers wait: a few rounds' worth at the sized load.
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
        Config { round: DEFAULT_ROUND, limits: Limits::default(), publication_interval: DEFAULT_PUBLICATION_INTERVAL }
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

/// A request on its way to the driver, and where its answer goes.
#[derive(Debug)]
pub(crate) struct Submission {
    pub(crate) request: Request,
    pub(crate) reply: Reply,
}

/// The answer to one request: its round and its position in it, or the round's failure.
pub(crate) type Reply = oneshot::Sender<Result<(Arc<SignedRound>, usize), Arc<Error>>>;

/// Starts the driver on the current tokio runtime.
///
/// # Errors
///
/// [`Error::Config`] for a round shorter than a second or a zero publication interval.
pub fn spawn(calendar: Calendar<Box<dyn CalendarStore>>, signer: CalendarSigner, config: Config) -> Result<Running, Error> {
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
    publications_file.publish(std::slice::from_ref(signer.certificate()), &publications, now())?;
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
    let shared = Arc::new(Shared { calendar: Mutex::new(calendar), signer, config, publications_file });
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(drive(Arc::clone(&shared), receive, stopped));
    Ok(Running { handle: Handle { submit, shared }, stop, task })
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
        let (reply, answer) = oneshot::channel();
        self.submit.send(Submission { request, reply }).await.map_err(|_| Arc::new(Error::ShuttingDown))?;
        let (round, index) = answer.await.map_err(|_| Arc::new(Error::ShuttingDown))??;
        round.signature(index).map_err(Arc::new)
    }

    /// The certificate of the calendar signing key, with its id.
    pub fn certificate(&self) -> &backbone_timestamping_verify::publications_file::CertificateRecord {
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
        self.shared.publications_file.as_ref().and_then(PublicationsFileSigner::latest)
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
    pub fn extend(&self, time: u64, publication_time: Option<u64>) -> Result<backbone_timestamping_verify::signature::CalendarChain, Error> {
        let calendar = self.calendar();
        let to = publication_time.or(calendar.head()).ok_or(Error::NotInCalendar { time, size: 0 })?;
        calendar.chain(time, to)
    }

    /// The service's settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    fn calendar(&self) -> std::sync::MutexGuard<'_, Calendar<Box<dyn CalendarStore>>> {
        self.shared.calendar.lock().unwrap_or_else(PoisonError::into_inner)
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

async fn drive(shared: Arc<Shared>, mut receive: mpsc::Receiver<Submission>, mut stopped: oneshot::Receiver<()>) {
    let mut ticker = tokio::time::interval(shared.config.round);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = Round::new(shared.config.limits);
    let mut waiting = Vec::new();
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
                Some(Submission { request, reply }) => match round.push(request, now()) {
                    Ok(_) => waiting.push(reply),
                    Err(e) => { let _ = reply.send(Err(Arc::new(e))); }
                },
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
                let closing = std::mem::replace(&mut round, Round::new(shared.config.limits));
                let replies = std::mem::take(&mut waiting);
                let worker = Arc::clone(&shared);
                let outcome = tokio::task::spawn_blocking(move || close(&worker, closing, time)).await;
                let outcome = outcome.unwrap_or_else(|_| Err(Error::Unreachable("round task panicked")));
                answer(replies, outcome);
            }
        }
    }
}

/// Closes the round as second `time`: tree, calendar commit, publication, signature. `None` for
/// a round without requests.
fn close(shared: &Shared, round: Round, time: u64) -> Result<Option<Arc<SignedRound>>, Error> {
    let interval = shared.config.publication_interval;
    let mut calendar = shared.calendar.lock().unwrap_or_else(PoisonError::into_inner);
    let due = time - time % interval;
    let last_published = calendar.publications()?.last().map(|p| p.time);
    let publish = due > 0 && last_published.is_none_or(|p| due > p);
    let closed = round.close(time)?;
    let root = closed.root();
    if publish && calendar.head().is_none_or(|h| due > h) && (due < time || root.is_none()) {
        calendar.append(due, None)?;
    }
    let signed = match &root {
        Some(root) => {
            let calendar_root = calendar.append(time, Some(root))?;
            let chain = calendar.chain(time, time)?;
            let record = shared.signer.sign(PublicationData::new(time, calendar_root))?;
            Some(Arc::new(SignedRound::in_calendar(closed, (chain, Anchor::CalendarAuth(record)))))
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
    let Some(file) = &shared.publications_file else { return };
    match file.publish(std::slice::from_ref(shared.signer.certificate()), publications, now()) {
        Ok(bytes) => tracing::info!(publications = publications.len(), bytes = bytes.len(), path = ?file.path(), "publications file signed and written"),
        Err(e) => tracing::error!(error = %e, path = ?file.path(), "cannot write the publications file; the previous one stays"),
    }
}

/// Sends each waiting request its round and position, or the round's failure.
pub(crate) fn answer(replies: Vec<Reply>, outcome: Result<Option<Arc<SignedRound>>, Error>) {
    match outcome {
        Ok(Some(round)) => {
            for (index, reply) in replies.into_iter().enumerate() {
                let _ = reply.send(Ok((Arc::clone(&round), index)));
            }
        }
        Ok(None) => {
            // An empty round has no one waiting; should one be, it is not left hanging.
            let e = Arc::new(Error::Unreachable("a request waited on a round without requests"));
            for reply in replies {
                let _ = reply.send(Err(Arc::clone(&e)));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "round failed; its requests are answered with the error");
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(Arc::clone(&e)));
            }
        }
    }
}

/// Seconds since 1970 by the system clock (the only clock read in this crate).
pub fn now() -> u64 {
    now_millis().0
}

/// Seconds since 1970 and the milliseconds into the second, by the system clock.
pub fn now_millis() -> (u64, u32) {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or((0, 0), |d| (d.as_secs(), d.subsec_millis()))
}
