//! `backbone audit export|verify`: archives of a gateway's message log for auditors, and their
//! offline verification. The archive format is `gateway/docs/audit-bundle.md`.
//!
//! ```text
//!  audit export --data-dir GW [--from T] [--to T | --after PREV] [--out F]
//!        key store ─▶ log data key ─▶ MessageLog (the stopped gateway's DATA_DIR/log)
//!        ─▶ records logged in [from, to), stamped, with proofs, batches, signing certificates
//!        ─▶ F (written to a temporary file, synced, renamed)
//!  audit verify F [--previous PREV] [--cert CAL | --publications-file P --trust-anchor CA] [--json]
//!        ─▶ every record, link, proof, KSI signature, descriptor signature, request binding
//!        ─▶ text or one JSON object; exit 0 only when everything verifies
//! ```

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backbone_gateway::log::archive::check::{self, Failure, Location, Options, Report};
use backbone_gateway::log::archive::{
    self, Archive, ExportError, MAX_ARCHIVE_LEN, Selection, Unverified,
};
use backbone_gateway::log::{LogConfig, LogError, MessageLog};
use backbone_timestamping_verify::publications_file::{PublicationsFile, TrustAnchors};
use backbone_timestamping_verify::verify::{Context, Policy};
use clap::{Args, Subcommand};

use crate::Error;
use crate::config::{Env, Settings};
use crate::gateway::LOG_KEY_LABEL;
use crate::hsm::{open_store, pin_source};

/// Records from which `audit verify` shows a progress bar (when standard error is a terminal).
pub const PROGRESS_FROM_RECORDS: usize = 5000;

/// `backbone audit ...`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The verb.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The verbs of `backbone audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Export a time range of a stopped gateway's message log as an archive for auditors.
    Export(ExportArgs),
    /// Verify an archive offline. Exit 0 only when everything verifies.
    Verify(VerifyArgs),
}

/// Flags of `backbone audit export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The gateway's directory (its message log is DIR/log). The gateway must be stopped: its
    /// log is open in one process at a time.
    #[arg(long, value_name = "DIR", default_value = "backbone-gateway")]
    pub data_dir: PathBuf,
    /// File holding the token's user PIN. Default: the configured hsm.pin_file or hsm.pin_env.
    #[arg(long, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// The gateway id written into the archive. Default: the common name of DIR/tls-csr.pem,
    /// written by `backbone gateway init`.
    #[arg(long)]
    pub id: Option<String>,
    /// Export records logged from this time: RFC 3339 (2026-11-26T10:00:00Z) or milliseconds
    /// since 1970. Default: the first record.
    #[arg(long, value_name = "TIME", conflicts_with = "after")]
    pub from: Option<String>,
    /// Export records logged before this time. Default: now.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Continue this earlier archive: start right after its last record (and check that the log
    /// still holds it), so that the two archives chain.
    #[arg(long, value_name = "ARCHIVE")]
    pub after: Option<PathBuf>,
    /// Where to write the archive. Default: audit-FIRST-END.bbar (the sequence range) in the
    /// current directory.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Flags of `backbone audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The archive.
    pub archive: PathBuf,
    /// The archive before it: this one must continue it. Default: the link to the previous
    /// archive is not checked (only an archive starting at record 0 links to the log's start).
    #[arg(long, value_name = "ARCHIVE")]
    pub previous: Option<PathBuf>,
    /// A calendar signing certificate (DER or PEM) trusted for the key-based KSI policy.
    /// Default: the KSI signatures are checked for internal consistency only.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// A publications file (needs --trust-anchor): the KSI signatures are checked against its
    /// publications (falling back to --cert's key when both are given).
    #[arg(long, value_name = "FILE", requires = "trust_anchor")]
    pub publications_file: Option<PathBuf>,
    /// PEM certificates trusted to sign the publications file.
    #[arg(long, value_name = "FILE")]
    pub trust_anchor: Option<PathBuf>,
    /// E-mail address the publications file's signer must carry. Default: KSI's.
    #[arg(long)]
    pub signer_email: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl AuditCommand {
    /// The verb's name, for spans.
    pub fn name(&self) -> &'static str {
        match self {
            AuditCommand::Export(_) => "audit export",
            AuditCommand::Verify(_) => "audit verify",
        }
    }
}

/// Runs one `backbone audit` verb.
///
/// # Errors
///
/// Bad flags exit 64; a running gateway, storage and key store failures, and any failed check
/// exit 1.
pub fn run(args: AuditArgs, settings: &Settings, env: &Env) -> Result<(), Error> {
    match args.command {
        AuditCommand::Export(export) => run_export(&export, settings, env),
        AuditCommand::Verify(verify) => run_verify(&verify),
    }
}

// --- export ---

fn run_export(args: &ExportArgs, settings: &Settings, env: &Env) -> Result<(), Error> {
    let now_ms = unix_ms(SystemTime::now());
    let to_ms = match &args.to {
        Some(text) => {
            parse_time(text).map_err(|why| Error::Usage(format!("--to {text:?}: {why}")))?
        }
        None => now_ms.saturating_add(1),
    };
    let gateway = match &args.id {
        Some(id) => id.clone(),
        None => gateway_id(&args.data_dir)?,
    };
    let previous = match &args.after {
        Some(path) => {
            let previous = read_archive(path)?;
            if previous.gateway != gateway {
                return Err(Error::Usage(format!(
                    "--after {}: an archive of gateway {}, not {gateway}",
                    path.display(),
                    previous.gateway
                )));
            }
            Some(previous)
        }
        None => None,
    };
    let from_ms = match (&args.from, &previous) {
        (Some(text), _) => {
            parse_time(text).map_err(|why| Error::Usage(format!("--from {text:?}: {why}")))?
        }
        (None, Some(previous)) => previous.to_ms,
        (None, None) => 0,
    };
    if to_ms < from_ms {
        return Err(Error::Usage(format!(
            "--to {} is before the start of the range, {}",
            rfc3339(to_ms),
            rfc3339(from_ms)
        )));
    }
    let log_dir = args.data_dir.join("log");
    if !log_dir.join("CURRENT").exists() {
        return Err(Error::Usage(format!(
            "{} holds no message log (is --data-dir a gateway's directory?)",
            log_dir.display()
        )));
    }
    let keys = open_store(
        &settings.hsm.store,
        &pin_source(args.pin_file.as_deref(), settings),
        env,
    )?;
    let wrapper = keys.wrapper(LOG_KEY_LABEL).map_err(Error::hsm(format!(
        "cannot open key '{LOG_KEY_LABEL}' in {}",
        keys.describe()
    )))?;
    let log = MessageLog::open(LogConfig::new(&log_dir, None), wrapper).map_err(|e| match e {
        LogError::Storage { ref reason, .. } if reason.to_ascii_lowercase().contains("lock") => Error::Check(format!(
            "the message log in {} is open in another process: stop the gateway (`backbone gateway serve`) before exporting ({reason})",
            log_dir.display()
        )),
        other => Error::Check(format!("message log: {other}")),
    })?;
    let selection = Selection {
        from_ms,
        to_ms,
        after: previous.as_ref().map(Archive::continuation),
    };
    let export = archive::export(&log, &gateway, selection, now_ms).map_err(|e| match e {
        ExportError::DoesNotContinue(_) => Error::Check(format!("--after: {e}")),
        other => Error::Check(other.to_string()),
    })?;
    drop(log);
    let archive = export.archive;
    let bytes = archive
        .encode()
        .map_err(|e| Error::Check(format!("cannot encode the archive: {e}")))?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "audit-{}-{}.bbar",
            archive.first_seq, archive.end_seq
        ))
    });
    write_atomically(&out, &bytes)?;
    println!(
        "wrote {}: gateway {}, records {}..{} ({}), {} batches, {} signing certificates, logged from {} to {}",
        out.display(),
        archive.gateway,
        archive.first_seq,
        archive.end_seq,
        archive.records.len(),
        archive.batches.len(),
        archive.certificates.len(),
        rfc3339(archive.from_ms),
        rfc3339(archive.to_ms),
    );
    println!(
        "last hash {} (the next archive continues from it: --after {})",
        hex(&archive.last_hash),
        out.display()
    );
    if let Some(seq) = export.unstamped_from {
        eprintln!(
            "records from {seq} on are not timestamped yet and were left out; start the gateway so that it stamps them, then export them with --after {}",
            out.display()
        );
    }
    Ok(())
}

/// The common name of the gateway's TLS certificate request: its id.
fn gateway_id(data_dir: &Path) -> Result<String, Error> {
    let path = data_dir.join("tls-csr.pem");
    let pem = std::fs::read(&path)
        .map_err(|e| Error::Usage(format!("give --id: cannot read {} ({e})", path.display())))?;
    let request = openssl::x509::X509Req::from_pem(&pem)
        .map_err(|e| Error::Usage(format!("give --id: {}: {e}", path.display())))?;
    let name = request
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|entry| entry.data().to_string().ok());
    name.ok_or_else(|| Error::Usage(format!("give --id: {} has no common name", path.display())))
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it over `path` and syncs
/// the directory: readers see the old file or the whole new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(Error::io("write", path))
}

// --- verify ---

fn run_verify(args: &VerifyArgs) -> Result<(), Error> {
    let bytes = read(&args.archive)?;
    let unverified = match Archive::decode_unverified(&bytes) {
        Ok(unverified) => unverified,
        Err(e) => {
            let failure = Failure {
                location: Location::Archive,
                reason: format!("does not decode: {e}"),
            };
            let report = Report {
                failures: vec![failure],
                ..Report::default()
            };
            return print_result(args, None, &report, "none");
        }
    };
    let previous = args.previous.as_deref().map(read_archive).transpose()?;
    let certificates = match &args.cert {
        Some(path) => vec![
            crate::ksi::certificate_record(&read(path)?)
                .map_err(|why| Error::Usage(format!("--cert {}: {why}", path.display())))?,
        ],
        None => Vec::new(),
    };
    let publications_file = match (&args.publications_file, &args.trust_anchor) {
        (Some(file), Some(anchor)) => {
            let mut anchors = TrustAnchors::from_pem(&read(anchor)?)
                .map_err(|e| Error::Usage(format!("--trust-anchor: {e}")))?;
            if let Some(email) = &args.signer_email {
                anchors = anchors.with_signer_email(email);
            }
            let now = i64::try_from(unix_ms(SystemTime::now()) / 1000).unwrap_or(i64::MAX);
            let parsed = PublicationsFile::parse_unverified(&read(file)?)
                .map_err(|e| Error::Check(format!("{}: {e}", file.display())))?;
            Some(
                parsed
                    .verify(&anchors, now)
                    .map_err(|e| Error::Check(format!("{}: {e}", file.display())))?,
            )
        }
        _ => None,
    };
    let (ksi_policy, policy_name) = match (publications_file.is_some(), certificates.is_empty()) {
        (true, false) => (Policy::Default, "publications file, then key-based"),
        (true, true) => (Policy::PublicationsFile, "publications file"),
        (false, false) => (Policy::KeyBased, "key-based"),
        (false, true) => (Policy::Internal, "internal"),
    };
    let ksi_context = Context {
        publications_file: publications_file.as_ref(),
        trusted_certificates: &certificates,
        ..Context::default()
    };
    let options = Options {
        previous: previous.as_ref(),
        ksi_policy,
        ksi_context,
    };
    let mut bar = ProgressBar::new(&args.archive, unverified.archive.records.len());
    let report = check::check(&unverified, &options, &mut |done, total| {
        bar.update(done, total)
    });
    bar.finish();
    print_result(args, Some(&unverified), &report, policy_name)
}

/// Prints the result and turns failures into an error (exit 1).
fn print_result(
    args: &VerifyArgs,
    unverified: Option<&Unverified>,
    report: &Report,
    policy: &str,
) -> Result<(), Error> {
    let shown = args.archive.display();
    let archive = unverified.map(|u| &u.archive);
    let problems = report.failures.len() as u64 + report.failures_omitted;
    if args.json {
        let failures: Vec<_> = report.failures.iter().map(failure_json).collect();
        let object = serde_json::json!({
            "result": if report.is_ok() { "OK" } else { "FAIL" },
            "archive": shown.to_string(),
            "gateway": archive.map(|a| a.gateway.clone()),
            "from_ms": archive.map(|a| a.from_ms),
            "to_ms": archive.map(|a| a.to_ms),
            "first_seq": archive.map(|a| a.first_seq),
            "end_seq": archive.map(|a| a.end_seq),
            "records": report.records,
            "stamped": report.stamped,
            "batches": archive.map(|a| a.batches.len()),
            "batches_verified": report.batches_verified,
            "certificates": archive.map(|a| a.certificates.len()),
            "signatures_verified": report.signatures_verified,
            "responses_bound": report.responses_bound,
            "responses_unpaired": report.responses_unpaired,
            "ksi_policy": policy,
            "previous": args.previous.as_ref().map(|p| serde_json::json!({"archive": p.display().to_string(), "linked": report.linked_to_previous})),
            "prev_hash": archive.map(|a| hex(&a.prev_hash)),
            "last_hash": archive.map(|a| hex(&a.last_hash)),
            "failures": failures,
            "failures_omitted": report.failures_omitted,
        });
        println!("{object}");
    } else {
        if let Some(a) = archive {
            println!(
                "archive {shown}: gateway {}, records {}..{}, logged from {} to {}",
                a.gateway,
                a.first_seq,
                a.end_seq,
                rfc3339(a.from_ms),
                rfc3339(a.to_ms)
            );
            println!(
                "  {} of {} records linked and stamped; {} of {} batches' KSI signatures verified ({policy} policy)",
                report.stamped,
                report.records,
                report.batches_verified,
                a.batches.len()
            );
            println!(
                "  {} descriptor signatures verified with {} signing certificates; {} responses bound to their requests ({} whose request is in an earlier archive)",
                report.signatures_verified,
                a.certificates.len(),
                report.responses_bound,
                report.responses_unpaired
            );
            match (&args.previous, report.linked_to_previous) {
                (Some(p), true) => println!("  continues {} (the hash link checked)", p.display()),
                (Some(p), false) => println!("  does not continue {}", p.display()),
                (None, _) if a.first_seq == 0 => println!("  starts at the log's first record"),
                (None, _) => println!(
                    "  follows record {} with hash {} (give --previous to check the link)",
                    a.first_seq - 1,
                    hex(&a.prev_hash)
                ),
            }
            println!("  last hash {}", hex(&a.last_hash));
        }
        for failure in &report.failures {
            println!("FAIL {failure}");
        }
        if report.failures_omitted > 0 {
            println!("FAIL ... and {} more", report.failures_omitted);
        }
        println!("{}", if report.is_ok() { "OK" } else { "FAIL" });
    }
    if report.is_ok() {
        Ok(())
    } else {
        Err(Error::Check(format!("{shown}: {problems} problems found")))
    }
}

fn failure_json(failure: &Failure) -> serde_json::Value {
    let (location, seq, message_id, batch) = match &failure.location {
        Location::Archive => ("archive", None, None, None),
        Location::Record { seq, message_id } => ("record", Some(*seq), message_id.clone(), None),
        Location::Batch { first_seq, count } => (
            "batch",
            None,
            None,
            Some(serde_json::json!({"first_seq": first_seq, "count": count})),
        ),
    };
    serde_json::json!({
        "location": location,
        "seq": seq,
        "message_id": message_id,
        "batch": batch,
        "reason": failure.reason,
        "message": failure.to_string(),
    })
}

/// A one-line progress bar on standard error, redrawn at most ten times a second; shown only
/// when standard error is a terminal and the archive is long.
struct ProgressBar {
    label: String,
    enabled: bool,
    drawn: Option<Instant>,
}

impl ProgressBar {
    /// Width of the bar in characters.
    const WIDTH: u64 = 30;

    fn new(path: &Path, records: usize) -> Self {
        let enabled = records >= PROGRESS_FROM_RECORDS && std::io::stderr().is_terminal();
        ProgressBar {
            label: path.display().to_string(),
            enabled,
            drawn: None,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        if !self.enabled
            || self
                .drawn
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
                && done < total
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let filled = (done.saturating_mul(Self::WIDTH) / total.max(1)).min(Self::WIDTH);
        let bar: String = (0..Self::WIDTH)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        let percent = done.saturating_mul(100) / total.max(1);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rverifying {} [{bar}] {percent:>3}% {done}/{total} records",
            self.label
        );
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.enabled && self.drawn.is_some() {
            let mut err = std::io::stderr().lock();
            // Carriage return, then erase the line: the result follows on standard output.
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

// --- files and times ---

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    let len = std::fs::metadata(path)
        .map_err(Error::io("read", path))?
        .len();
    if len > MAX_ARCHIVE_LEN {
        return Err(Error::Usage(format!(
            "{} is {len} bytes, more than the limit of {MAX_ARCHIVE_LEN}",
            path.display()
        )));
    }
    std::fs::read(path).map_err(Error::io("read", path))
}

/// An archive whose digest must match (the one before the archive being checked or exported).
fn read_archive(path: &Path) -> Result<Archive, Error> {
    Archive::decode(&read(path)?).map_err(|e| Error::Check(format!("{}: {e}", path.display())))
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since 1970 from an integer, or from RFC 3339 (`2026-11-26T10:00:00Z`,
/// `2026-11-26T12:00:00.250+02:00`).
pub fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let bad = || {
        format!(
            "expected milliseconds since 1970 or RFC 3339 such as 2026-11-26T10:00:00Z, got {text:?}"
        )
    };
    let (date, rest) = text.split_once(['T', 't', ' ']).ok_or_else(bad)?;
    let mut parts = date.splitn(3, '-').map(str::parse::<u32>);
    let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day))) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (clock, offset_secs) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, 0i64)
    } else {
        let at = rest.rfind(['+', '-']).ok_or_else(bad)?;
        let (clock, offset) = rest.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = offset
            .get(1..)
            .and_then(|o| o.split_once(':'))
            .ok_or_else(bad)?;
        let (hours, minutes): (i64, i64) = (
            hours.parse().map_err(|_| bad())?,
            minutes.parse().map_err(|_| bad())?,
        );
        if hours > 23 || minutes > 59 {
            return Err(bad());
        }
        (clock, sign * (hours * 3600 + minutes * 60))
    };
    let (whole, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut fields = whole.splitn(3, ':').map(str::parse::<u8>);
    let (Some(Ok(hour)), Some(Ok(minute)), Some(Ok(second))) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(bad());
    };
    if !(1970..=9999).contains(&year)
        || second > 60
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let millis: u16 = format!("{fraction:0<3}")
        .get(..3)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    // A leap second (:60) counts as the last instant of its minute.
    let time =
        time::Time::from_hms_milli(hour, minute, second.min(59), millis).map_err(|_| bad())?;
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let date = time::Date::from_calendar_date(
        i32::try_from(year).map_err(|_| bad())?,
        month,
        u8::try_from(day).map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    let offset =
        time::UtcOffset::from_whole_seconds(i32::try_from(offset_secs).map_err(|_| bad())?)
            .map_err(|_| bad())?;
    let at = time::PrimitiveDateTime::new(date, time).assume_offset(offset);
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text:?} is before 1970"))
}

/// RFC 3339 in UTC, with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    backbone_gateway::usage::rfc3339(ms)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_print() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1764151200123"), Ok(1_764_151_200_123));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2026-11-26T10:00:00Z"), Ok(1_795_687_200_000));
        assert_eq!(
            parse_time("2026-11-26T12:00:00.25+02:00"),
            Ok(1_795_687_200_250)
        );
        assert_eq!(
            parse_time("2024-02-29T00:00:00-01:30"),
            parse_time("2024-02-29T01:30:00Z")
        );
        for bad in [
            "4294967295-01-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-26",
            "yesterday",
            "2026-11-26T10:00:00",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(rfc3339(1_795_687_200_250), "2026-11-26T10:00:00.250Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        for ms in [0, 951_782_400_000, 1_709_164_800_999, 4_102_444_800_000] {
            assert_eq!(parse_time(&rfc3339(ms)), Ok(ms));
        }
    }
}
