//! Exports of a person's access history: CSV for a spreadsheet, and a FHIR R4 Bundle of
//! AuditEvent resources following IHE Basic Audit Log Patterns (BALP), one per access, in the
//! shape of BALP's "PatientRead" for the person as the patient.

use crate::history::Entry;
use crate::i18n::{self, Lang};
use crate::local_time;

/// The FHIR identifier system of Estonian personal codes.
pub const PERSONAL_CODE_SYSTEM: &str = "https://fhir.ee/sid/pid/est/ni";
/// The identifier system for X-Road member and subsystem ids.
pub const XROAD_SYSTEM: &str = "urn:x-road:id";

/// The entries as CSV (RFC 4180, CRLF, every field quoted). A field that a spreadsheet would run
/// as a formula (`=`, `+`, `-`, `@`, tab, carriage return) is prefixed with `'`.
pub fn csv(entries: &[&Entry], lang: Lang) -> String {
    let header = match lang {
        Lang::Et => [
            "aeg",
            "asutus",
            "asutuse tunnus",
            "kasutaja",
            "andmed",
            "eesmärgi kood",
            "eesmärk",
            "erakorraline",
            "andmete hoidja",
            "sõnumi tunnus",
        ],
        Lang::En => [
            "time",
            "institution",
            "institution id",
            "user",
            "data",
            "purpose code",
            "purpose",
            "emergency",
            "data held by",
            "message id",
        ],
    };
    let mut out = String::new();
    push_row(&mut out, header.iter().map(|s| (*s).to_owned()));
    for entry in entries {
        let purpose_code = entry.purpose.clone().unwrap_or_default();
        push_row(
            &mut out,
            [
                local_time::iso(i64::try_from(entry.time_ms).unwrap_or(0)),
                entry.institution.clone(),
                entry.client.clone(),
                entry.user_id.clone().unwrap_or_default(),
                i18n::data(lang, &entry.service_code, entry.description.as_deref()),
                purpose_code.clone(),
                if purpose_code.is_empty() {
                    String::new()
                } else {
                    i18n::purpose(lang, &purpose_code)
                },
                if entry.emergency { "1" } else { "0" }.to_owned(),
                entry.provider.clone(),
                entry.message_id.clone(),
            ]
            .into_iter(),
        );
    }
    out
}

fn push_row(out: &mut String, fields: impl Iterator<Item = String>) {
    let quoted: Vec<String> = fields
        .map(|f| {
            let f = if f.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{f}")
            } else {
                f
            };
            format!("\"{}\"", f.replace('"', "\"\""))
        })
        .collect();
    out.push_str(&quoted.join(","));
    out.push_str("\r\n");
}

/// The entries as a FHIR R4 Bundle (type `collection`) of BALP AuditEvents about `subject`.
pub fn fhir(entries: &[&Entry], subject: &str, now_ms: u64) -> serde_json::Value {
    let personal_code = subject.strip_prefix("EE").unwrap_or(subject);
    let resources: Vec<serde_json::Value> = entries
        .iter()
        .map(|entry| {
            let id = uuid_like(&entry.key);
            let mut agents = vec![serde_json::json!({
                "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153", "display": "Source Role ID"}]},
                "who": {"identifier": {"system": XROAD_SYSTEM, "value": entry.client}, "display": entry.institution},
                "requestor": entry.user_id.is_none(),
            })];
            if let Some(user) = &entry.user_id {
                agents.push(serde_json::json!({
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
                    "who": {"identifier": {"value": user}},
                    "requestor": true,
                }));
            }
            let provider_subsystem = entry.service.rsplit_once('/').map(|(provider, _)| provider).unwrap_or(&entry.service);
            agents.push(serde_json::json!({
                "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110152", "display": "Destination Role ID"}]},
                "who": {"identifier": {"system": XROAD_SYSTEM, "value": provider_subsystem}, "display": entry.provider},
                "requestor": false,
            }));
            let mut event = serde_json::json!({
                "resourceType": "AuditEvent",
                "id": id,
                "meta": {"profile": ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"]},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
                "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"}],
                "action": "R",
                "recorded": backbone_gateway::usage::rfc3339(entry.time_ms),
                // FHIR R4 AuditEventOutcome: 0 success, 4 minor failure (refused, nothing given
                // out), 8 serious failure (cut off: how it ended is not known).
                "outcome": match entry.outcome {
                    backbone_gateway::usage::OutcomeJson::Answered(_) => "0",
                    backbone_gateway::usage::OutcomeJson::Refused(_) => "4",
                    backbone_gateway::usage::OutcomeJson::Unanswered => "8",
                },
                "agent": agents,
                "source": {
                    "observer": {"display": entry.records.first().map(|r| r.agency_name.clone()).unwrap_or_default()},
                    "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}],
                },
                "entity": [
                    {
                        "what": {"identifier": {"system": PERSONAL_CODE_SYSTEM, "value": personal_code}},
                        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
                        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
                    },
                    {
                        "what": {"identifier": {"value": entry.message_id}},
                        "type": {"system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "code": "XrequestId", "display": "X-Request-Id"},
                    },
                    {
                        "what": {"identifier": {"system": XROAD_SYSTEM, "value": entry.service}},
                        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
                        "description": entry.description.clone().unwrap_or_default(),
                    },
                ],
            });
            if let Some(purpose) = &entry.purpose {
                event["purposeOfEvent"] = serde_json::json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}]}]);
            }
            serde_json::json!({"fullUrl": format!("urn:uuid:{id}"), "resource": event})
        })
        .collect();
    serde_json::json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": backbone_gateway::usage::rfc3339(now_ms),
        "total": resources.len(),
        "entry": resources,
    })
}

/// A UUID-shaped id (version 8, custom) from an entry key of 32 hex digits.
fn uuid_like(key: &str) -> String {
    let hex: String = key
        .chars()
        .filter(char::is_ascii_hexdigit)
        .chain(std::iter::repeat('0'))
        .take(32)
        .collect();
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default().to_owned();
    format!(
        "{}-{}-8{}-{}-{}",
        part(0..8),
        part(8..12),
        part(13..16),
        part(16..20),
        part(20..32)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Logged;

    fn entry(user: Option<&str>) -> Entry {
        Entry {
            key: "0123456789abcdef0123456789abcdef".into(),
            time_ms: 1_795_694_400_123,
            client: "EE/COM/10000001/dispensing".into(),
            member: "EE/COM/10000001".into(),
            institution: "Town \"Corner\" Pharmacy".into(),
            user_id: user.map(str::to_owned),
            service: "EE/GOV/70000001/ehr/patients".into(),
            service_code: "patients".into(),
            description: Some("patient records".into()),
            provider: "North Estonia Medical Centre".into(),
            purpose: Some("ETREAT".into()),
            emergency: true,
            message_id: "=HYPERLINK(\"x\")".into(),
            own: false,
            outcome: backbone_gateway::usage::OutcomeJson::Answered(200),
            records: vec![Logged {
                agency: "EE/GOV/70000001".into(),
                agency_name: "North Estonia Medical Centre".into(),
                side: "provider".into(),
                record: backbone_gateway::usage::RecordRef {
                    seq: 1,
                    hash: String::new(),
                },
                proof: None,
            }],
        }
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let e = entry(Some("EE47101010033"));
        let text = csv(&[&e], Lang::En);
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("\"time\",\"institution\""));
        assert!(
            lines[1].starts_with("\"2026-11-26T14:00:00+02:00\",\"Town \"\"Corner\"\" Pharmacy\""),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains("\"'=HYPERLINK(\"\"x\"\")\""),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("\"For emergency treatment\",\"1\""));
    }

    #[test]
    fn fhir_bundle_has_balp_audit_events() {
        let e = entry(None);
        let bundle = fhir(&[&e], "EE38001085718", 0);
        assert_eq!(bundle["resourceType"], "Bundle");
        let event = &bundle["entry"][0]["resource"];
        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(event["action"], "R");
        assert_eq!(event["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
        assert_eq!(
            event["entity"][0]["what"]["identifier"]["value"],
            "38001085718"
        );
        assert_eq!(event["entity"][0]["role"]["code"], "1");
        assert_eq!(event["agent"][0]["requestor"], true);
        assert_eq!(
            bundle["entry"][0]["fullUrl"],
            "urn:uuid:01234567-89ab-8def-0123-456789abcdef"
        );
    }
}
