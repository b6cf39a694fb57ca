//! The access history: every agency's `findUsage` asked over the backbone, through the portal's
//! own gateway, and the answers merged newest first.
//!
//! ```text
//!  portal ─r1 GET /r1/{agency}/findUsage─▶ portal's gateway ══▶ agency's gateway (its log)
//!         ◀──────────── UsageAnswer (entries with proofs) ────────────────┘
//! ```
//!
//! Which agencies: every catalogue service of the global configuration whose code is
//! `findUsage`. An exchange appears in the logs of both the calling and the serving agency
//! (same client and message id, `side` client or provider): the two are merged into one
//! [`Entry`] that keeps both records and proofs. The portal's own `findUsage` questions are
//! marked [`Entry::own`]; the history page hides them unless asked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backbone_gateway::connect::GatewayClient;
use backbone_gateway::meta::FIND_USAGE;
use backbone_gateway::usage::{OutcomeJson, ProofJson, RecordRef, UsageAnswer};
use backbone_registry::GlobalConf;
use backbone_registry::client::ConfClient;
use sha2::{Digest, Sha256};

/// Entries asked of each agency.
pub const DEFAULT_LIMIT: usize = 500;
/// How long one agency may take to answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `findUsage` answer read, in bytes (500 entries with proofs fit in well under 4 MiB).
pub const MAX_ANSWER: usize = 8 << 20;

/// How the portal reaches the agencies.
#[derive(Clone, Debug)]
pub struct BackboneConfig {
    /// The portal's own gateway's client interface, as the portal's subsystem connects to it
    /// (HTTPS with the portal's registered client certificate, normally).
    pub gateway: GatewayClient,
    /// The portal's subsystem, sent as `X-Road-Client`.
    pub client: String,
    /// Entries asked of each agency.
    pub limit: usize,
    /// How long one agency may take.
    pub timeout: Duration,
}

/// One access, merged from the agencies' logs.
#[derive(Clone, Debug)]
pub struct Entry {
    /// A stable key for URLs: the first 16 bytes of SHA-256 over client and message id, hex.
    pub key: String,
    /// When it was logged (the earliest of its records), unix milliseconds.
    pub time_ms: u64,
    /// The calling subsystem.
    pub client: String,
    /// The calling member.
    pub member: String,
    /// The calling member's name.
    pub institution: String,
    /// The person or role at the caller, if it said.
    pub user_id: Option<String>,
    /// The service called.
    pub service: String,
    /// The service code.
    pub service_code: String,
    /// The catalogue's description of the service, if catalogued.
    pub description: Option<String>,
    /// The serving member's name.
    pub provider: String,
    /// The purpose of use (HL7 code).
    pub purpose: Option<String>,
    /// Emergency access.
    pub emergency: bool,
    /// The X-Road message id.
    pub message_id: String,
    /// The portal's own question on the person's behalf.
    pub own: bool,
    /// How the request ended, as the agencies' logs say: answered if either side logged an
    /// answer (the provider's status first), else refused if either logged a fault, else
    /// unanswered.
    pub outcome: OutcomeJson,
    /// The log records that hold it, one per agency that logged it.
    pub records: Vec<Logged>,
}

/// One agency's log record of an access.
#[derive(Clone, Debug)]
pub struct Logged {
    /// The agency (member id) whose log holds it.
    pub agency: String,
    /// Its name.
    pub agency_name: String,
    /// `client` or `provider`.
    pub side: String,
    /// The record.
    pub record: RecordRef,
    /// Its proof, once stamped.
    pub proof: Option<ProofJson>,
}

/// What the agencies answered.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The accesses, newest first.
    pub entries: Vec<Entry>,
    /// Institutions whose gateway did not answer.
    pub unavailable: Vec<String>,
}

/// Asks the agencies.
#[derive(Debug)]
pub struct Agencies {
    config: BackboneConfig,
    conf: Arc<ConfClient>,
    gateway: GatewayClient,
}

// === impl Agencies ===

impl Agencies {
    /// Agencies found in `conf`, reached through the gateway in `config`.
    pub fn new(config: BackboneConfig, conf: Arc<ConfClient>) -> Agencies {
        let gateway = config
            .gateway
            .clone()
            .with_timeout(config.timeout)
            .with_max_answer(MAX_ANSWER);
        Agencies {
            config,
            conf,
            gateway,
        }
    }

    /// The portal's subsystem.
    pub fn client(&self) -> &str {
        &self.config.client
    }

    /// The current global configuration, if it is valid.
    pub fn conf(&self) -> Option<Arc<GlobalConf>> {
        self.conf.current(SystemTime::now()).ok()
    }

    /// `person`'s history from every agency, asked at once. An agency that fails is named in
    /// [`History::unavailable`]; the rest still count.
    pub async fn history(&self, person: &str) -> History {
        let Some(conf) = self.conf() else {
            return History {
                entries: Vec::new(),
                unavailable: vec!["—".into()],
            };
        };
        let services: Vec<_> = conf
            .services
            .iter()
            .filter(|s| s.id.code() == FIND_USAGE)
            .map(|s| s.id.clone())
            .collect();
        let mut asks = tokio::task::JoinSet::new();
        for service in services {
            let gateway = self.gateway.clone();
            let target = format!("/r1/{service}?offset=0&limit={}", self.config.limit);
            let (client, person) = (self.config.client.clone(), person.to_owned());
            asks.spawn(async move {
                let answer = ask(&gateway, &target, &client, &person).await;
                (service, answer)
            });
        }
        let mut answers = Vec::new();
        let mut unavailable = Vec::new();
        while let Some(done) = asks.join_next().await {
            let Ok((service, answer)) = done else {
                continue;
            };
            let member = service.provider().member().to_string();
            match answer {
                Ok(answer) => answers.push((member, answer)),
                Err(reason) => {
                    tracing::warn!(agency = %member, service = %service, %reason, "findUsage not answered");
                    unavailable.push(member_name(&conf, &member));
                }
            }
        }
        unavailable.sort();
        unavailable.dedup();
        History {
            entries: merge(&conf, &self.config.client, answers),
            unavailable,
        }
    }
}

async fn ask(
    gateway: &GatewayClient,
    target: &str,
    client: &str,
    person: &str,
) -> Result<UsageAnswer, String> {
    let answer = gateway
        .get(target)
        .header("X-Road-Client", client)
        .header("X-Backbone-Data-Subject", person)
        .header("X-Backbone-Purpose-Of-Use", "PATRQT")
        .header("X-Road-UserId", person)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !answer.status.is_success() {
        return Err(format!(
            "answered {} {}",
            answer.status,
            answer.fault_type().unwrap_or_default()
        ));
    }
    let body = answer.body;
    let answer: UsageAnswer =
        serde_json::from_slice(&body).map_err(|e| format!("answer does not decode: {e}"))?;
    // An agency must answer about the person asked, and only about them.
    if answer.data_subject != person {
        return Err("answered about another data subject".into());
    }
    Ok(answer)
}

/// Merges agencies' answers into entries, newest first: one entry per (client, message id).
pub fn merge(
    conf: &GlobalConf,
    own_client: &str,
    answers: Vec<(String, UsageAnswer)>,
) -> Vec<Entry> {
    let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
    for (agency, answer) in answers {
        let agency_name = member_name(conf, &agency);
        for usage in answer.entries {
            let key = entry_key(&usage.client, &usage.message_id);
            let logged = Logged {
                agency: agency.clone(),
                agency_name: agency_name.clone(),
                side: usage.side.clone(),
                record: usage.record.clone(),
                proof: usage.proof.clone(),
            };
            if let Some(entry) = merged.get_mut(&key) {
                entry.time_ms = entry.time_ms.min(usage.time_ms);
                entry.outcome = combine(
                    std::mem::take(&mut entry.outcome),
                    usage.outcome,
                    usage.side == "provider",
                );
                entry.user_id = entry.user_id.take().or(usage.user_id);
                if !entry
                    .records
                    .iter()
                    .any(|r| r.agency == logged.agency && r.record == logged.record)
                {
                    entry.records.push(logged);
                }
                continue;
            }
            let service_id: Option<backbone_registry::id::ServiceId> = usage.service.parse().ok();
            let service_code = service_id
                .as_ref()
                .map(|s| s.code().to_owned())
                .unwrap_or_else(|| usage.service.clone());
            let description = service_id
                .as_ref()
                .and_then(|id| conf.services.iter().find(|s| &s.id == id))
                .map(|s| s.description.clone());
            let provider = service_id
                .as_ref()
                .map(|s| member_name(conf, &s.provider().member().to_string()))
                .unwrap_or_default();
            let entry = Entry {
                key: key.clone(),
                time_ms: usage.time_ms,
                own: usage.client == own_client && service_code == FIND_USAGE,
                institution: member_name(conf, &usage.member),
                client: usage.client,
                member: usage.member,
                user_id: usage.user_id,
                service: usage.service,
                service_code,
                description,
                provider,
                purpose: usage.purpose_of_use,
                emergency: usage.emergency,
                message_id: usage.message_id,
                outcome: usage.outcome,
                records: vec![logged],
            };
            merged.insert(key, entry);
        }
    }
    let mut entries: Vec<Entry> = merged.into_values().collect();
    // Agencies answer in any order: keep each entry's records in one order, so that a proof's
    // index names the same record on every page.
    for entry in &mut entries {
        entry.records.sort_by(|a, b| {
            (&a.agency, &a.side, a.record.seq).cmp(&(&b.agency, &b.side, b.record.seq))
        });
    }
    entries.sort_by(|a, b| b.time_ms.cmp(&a.time_ms).then_with(|| a.key.cmp(&b.key)));
    entries
}

/// One access's outcome from two logs: an answer wins (the provider's, when `theirs` is the
/// provider's), then a refusal, then none.
fn combine(ours: OutcomeJson, theirs: OutcomeJson, theirs_is_provider: bool) -> OutcomeJson {
    match (ours, theirs) {
        (OutcomeJson::Answered(_), answered @ OutcomeJson::Answered(_)) if theirs_is_provider => {
            answered
        }
        (answered @ OutcomeJson::Answered(_), _) | (_, answered @ OutcomeJson::Answered(_)) => {
            answered
        }
        (refused @ OutcomeJson::Refused(_), _) | (_, refused @ OutcomeJson::Refused(_)) => refused,
        _ => OutcomeJson::Unanswered,
    }
}

/// The URL key of an access.
pub fn entry_key(client: &str, message_id: &str) -> String {
    let digest = Sha256::digest(format!("{client}\n{message_id}").as_bytes());
    backbone_gateway::usage::hex(digest.get(..16).unwrap_or_default())
}

/// A member's name from the configuration, or its id.
pub fn member_name(conf: &GlobalConf, member: &str) -> String {
    conf.members
        .iter()
        .find(|m| m.id.to_string() == member)
        .map(|m| m.name.clone())
        .unwrap_or_else(|| member.to_owned())
}

/// The filters of the history page, from its GET form.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Filter {
    /// First day, `YYYY-MM-DD`, Tallinn time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// Last day, `YYYY-MM-DD`, Tallinn time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    /// A member id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub institution: String,
    /// A purpose code.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub purpose: String,
    /// `1` for emergency access only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub emergency: String,
    /// `1` to include the portal's own questions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mine: String,
}

// === impl Filter ===

impl Filter {
    /// The filter in a query string; unknown parameters are ignored and a query that does not
    /// decode gives no filter.
    pub fn parse(query: Option<&str>) -> (Filter, usize) {
        #[derive(serde::Deserialize)]
        struct WithPage {
            #[serde(flatten)]
            filter: Filter,
            #[serde(default)]
            page: Option<String>,
        }
        let parsed: Option<WithPage> = serde_urlencoded::from_str(query.unwrap_or_default()).ok();
        let Some(parsed) = parsed else {
            return (Filter::default(), 1);
        };
        let page = parsed
            .page
            .and_then(|p| p.parse::<usize>().ok())
            .filter(|p| (1..=100_000).contains(p))
            .unwrap_or(1);
        (parsed.filter, page)
    }

    /// The query string for this filter (without `page`).
    pub fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }

    /// Whether `entry` passes.
    pub fn accepts(&self, entry: &Entry) -> bool {
        let time = i64::try_from(entry.time_ms).unwrap_or(i64::MAX);
        let from = crate::local_time::day_start(&self.from);
        // Up to the start of the next day (23, 24 or 25 hours on: noon of the next day names it).
        let to = crate::local_time::day_start(&self.to)
            .map(|start| start + 36 * 3_600_000)
            .and_then(|noon| crate::local_time::day_start(&crate::local_time::date(noon)));
        from.is_none_or(|f| time >= f)
            && to.is_none_or(|t| time < t)
            && (self.institution.is_empty() || entry.member == self.institution)
            && (self.purpose.is_empty() || entry.purpose.as_deref() == Some(self.purpose.as_str()))
            && (self.emergency != "1" || entry.emergency)
            && (self.mine == "1" || !entry.own)
    }

    /// Whether any filter is set.
    pub fn is_set(&self) -> bool {
        *self != Filter::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_leniently_and_round_trip() {
        let (filter, page) = Filter::parse(Some(
            "from=2026-11-01&purpose=ETREAT&emergency=1&page=3&junk=x",
        ));
        assert_eq!(
            (
                filter.from.as_str(),
                filter.purpose.as_str(),
                filter.emergency.as_str(),
                page
            ),
            ("2026-11-01", "ETREAT", "1", 3)
        );
        assert_eq!(Filter::parse(Some(&filter.query())).0, filter);
        assert_eq!(Filter::parse(Some("page=-1")).1, 1);
        assert_eq!(Filter::parse(Some("%zz")).0, Filter::default());
        assert_eq!(Filter::default().query(), "");
    }

    #[test]
    fn an_access_is_answered_if_either_log_says_so_and_the_providers_status_wins() {
        use OutcomeJson::{Answered, Refused, Unanswered};
        let refused = || Refused("Server.ServerProxy.AccessDenied".into());
        // The client's log first, the provider's second, and the other way round.
        assert_eq!(combine(Answered(502), Answered(200), true), Answered(200));
        assert_eq!(combine(Answered(200), Answered(502), false), Answered(200));
        assert_eq!(combine(Unanswered, Answered(404), true), Answered(404));
        assert_eq!(combine(refused(), Answered(200), true), Answered(200));
        assert_eq!(combine(Unanswered, refused(), false), refused());
        assert_eq!(combine(refused(), Unanswered, true), refused());
        assert_eq!(combine(Unanswered, Unanswered, true), Unanswered);
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(entry_key("a", "1"), entry_key("a", "1"));
        assert_ne!(entry_key("a", "1"), entry_key("b", "1"));
        assert_eq!(entry_key("a", "1").len(), 32);
    }
}
