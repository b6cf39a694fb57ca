//! The `findUsage` answer: for one person, each access to their data logged at this gateway,
//! newest first, with the record's proof.
//!
//! ```json
//! {"dataSubject":"EE38001085718","offset":0,"limit":50,"entries":[
//!   {"time":"2026-11-26T10:15:03.120Z","timeMs":1795688103120,"side":"provider",
//!    "client":"EE/COM/10000001/dispensing","member":"EE/COM/10000001","userId":"EE47101010033",
//!    "service":"EE/GOV/70000001/ehr/patients","purposeOfUse":"TREAT","emergency":false,
//!    "messageId":"…","outcome":{"answered":200},"record":{"seq":41,"hash":"<hex SHA-256>"},
//!    "proof":{"batch":40,"leafIndex":1,"batchCount":6,"path":["<hex>",…],"root":"<hex>",
//!             "ksiSignature":"<base64>"}}]}
//! ```
//!
//! Each entry is a request record, logged before the request was acted on; `outcome` is how it
//! ended: `{"answered":STATUS}` (the service's answer, its own errors included),
//! `{"refused":"Server.ServerProxy.ServiceFailed"}` (a gateway's fault), or `"unanswered"` (in
//! flight, or the gateway stopped before it could log an outcome). A refused or unanswered
//! request is not a completed access, though a service called may have read the data.
//!
//! `proof` is absent until the record's batch is stamped (within seconds). The proof checks
//! offline: the record hash and the audit path give the root (RFC 6962 tree); the KSI signature
//! is over the imprint `01 ‖ root` (`backbone ksi verify SIG --hash 01<root hex>`).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::log::{Outcome, Side, UsageEntry};

/// The rule both gateways apply to a `findUsage` request: it names the person it is for as both
/// `X-Road-UserId` and data subject. This is the calling subsystem's claim (the citizen portal's,
/// made credible by that subsystem's authenticated connection to its gateway and by its access
/// right), not a proof of who signed in to the portal.
///
/// # Errors
///
/// [`Error::HealthContext`] when the two are missing or differ.
pub fn check_names_the_person(
    user_id: Option<&str>,
    data_subject: Option<&str>,
) -> Result<(), Error> {
    match (user_id, data_subject) {
        (Some(user), Some(subject)) if user == subject => Ok(()),
        _ => Err(Error::HealthContext("findUsage must name the person it is for as both X-Road-UserId and X-Backbone-Data-Subject".to_owned())),
    }
}

/// The whole answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageAnswer {
    /// The person asked about.
    pub data_subject: String,
    /// Entries skipped.
    pub offset: usize,
    /// Most entries returned.
    pub limit: usize,
    /// The accesses, newest first.
    pub entries: Vec<UsageJson>,
}

/// One access.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageJson {
    /// When it was logged, RFC 3339 UTC.
    pub time: String,
    /// The same, unix milliseconds.
    pub time_ms: u64,
    /// `client` when this gateway sent the request, `provider` when it served it.
    pub side: String,
    /// The requesting member or subsystem.
    pub client: String,
    /// The requesting member.
    pub member: String,
    /// The person or role at the client, if the client said (`X-Road-UserId`).
    pub user_id: Option<String>,
    /// The service called.
    pub service: String,
    /// The purpose of use (HL7 code).
    pub purpose_of_use: Option<String>,
    /// Whether it was an emergency access.
    pub emergency: bool,
    /// The X-Road message id.
    pub message_id: String,
    /// How the request ended (absent in answers of gateways that logged no outcomes).
    #[serde(default)]
    pub outcome: OutcomeJson,
    /// The log record.
    pub record: RecordRef,
    /// The timestamp proof, once stamped.
    pub proof: Option<ProofJson>,
}

/// How a logged request ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OutcomeJson {
    /// The service answered with this status.
    Answered(u16),
    /// A gateway's fault ended it: its X-Road type.
    Refused(String),
    /// No outcome logged.
    #[default]
    Unanswered,
}

/// A log record's place and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordRef {
    /// Its sequence number in this gateway's log.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
}

/// A record's proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProofJson {
    /// The batch id (its first sequence number).
    pub batch: u64,
    /// The record's leaf index in the batch.
    pub leaf_index: u64,
    /// Records in the batch.
    pub batch_count: u64,
    /// The audit path, bottom-up, hex.
    pub path: Vec<String>,
    /// The batch root, hex.
    pub root: String,
    /// The KSI signature over `01 ‖ root`, base64.
    pub ksi_signature: String,
}

/// The answer for `subject`.
pub fn answer(subject: &str, offset: usize, limit: usize, entries: &[UsageEntry]) -> UsageAnswer {
    UsageAnswer {
        data_subject: subject.to_owned(),
        offset,
        limit,
        entries: entries.iter().map(entry_json).collect(),
    }
}

fn entry_json(entry: &UsageEntry) -> UsageJson {
    let member = entry
        .client
        .split('/')
        .take(3)
        .collect::<Vec<_>>()
        .join("/");
    UsageJson {
        time: rfc3339(entry.logged_at_ms),
        time_ms: entry.logged_at_ms,
        side: match entry.side {
            Side::Client => "client",
            Side::Provider => "provider",
        }
        .to_owned(),
        client: entry.client.clone(),
        member,
        user_id: entry.user_id.clone(),
        service: entry.service.clone(),
        purpose_of_use: entry.purpose_of_use.clone(),
        emergency: entry.emergency,
        message_id: entry.message_id.clone(),
        outcome: match &entry.outcome {
            Outcome::Answered { status } => OutcomeJson::Answered(*status),
            Outcome::Refused { fault } => OutcomeJson::Refused(fault.clone()),
            Outcome::Unanswered => OutcomeJson::Unanswered,
        },
        record: RecordRef {
            seq: entry.seq,
            hash: hex(&entry.record_hash),
        },
        proof: entry.stamp.as_ref().map(|stamp| ProofJson {
            batch: stamp.proof.batch,
            leaf_index: stamp.proof.leaf_index,
            batch_count: stamp.proof.batch_count,
            path: stamp.proof.path.iter().map(|h| hex(h)).collect(),
            root: hex(&stamp.batch.root),
            ksi_signature: base64::engine::general_purpose::STANDARD
                .encode(&stamp.batch.ksi_signature),
        }),
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of unix milliseconds (UTC).
pub fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        // Past year 9999: no log record is dated there; say so rather than print a wrong date.
        Err(_) => format!("{ms} ms after 1970"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_694_400_123), "2026-11-26T12:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
