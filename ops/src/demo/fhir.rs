//! The agencies' own information systems, as small in-process FHIR R4 JSON services: each serves
//! the synthetic records of its agency and accepts new ones. They sit behind their agency's
//! gateway, which forwards `/r1/…/fhir/{type}…` to `{base}/{type}…`.
//!
//! ```text
//!  gateway ─▶ GET  /fhir/{type}?patient=EE…   ─▶ searchset Bundle of that person's resources
//!             GET  /fhir/{type}/{id}          ─▶ the resource
//!             POST /fhir/{type}               ─▶ 201, stored with a new id
//!             GET  /fhir/metadata             ─▶ CapabilityStatement
//! ```
//!
//! A request that names a person other than the data subject the gateway passed on
//! (`X-Backbone-Data-Subject`) is refused with 403: a client may only ask about the person it
//! declared.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::data::{Citizen, Condition};

/// The resource types the demo services know.
pub const RESOURCE_TYPES: [&str; 6] = [
    "Patient",
    "Observation",
    "MedicationRequest",
    "MedicationDispense",
    "DocumentReference",
    "Claim",
];

/// The identifier system of Estonian personal codes.
pub const PERSONAL_CODE_SYSTEM: &str = "https://www.ria.ee/isikukood";

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Largest resource a service accepts.
const MAX_RESOURCE_LEN: usize = 256 * 1024;

/// One agency's records, by resource type.
#[derive(Debug, Default)]
pub struct Records {
    /// Resources by type, in insertion order.
    by_type: BTreeMap<String, Vec<Value>>,
    /// The next id per type.
    next: BTreeMap<String, u64>,
}

/// A running service.
#[derive(Debug)]
pub struct FhirService {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its records (the demo adds dispensings directly, as the pharmacy's own system would).
    pub records: Arc<Mutex<Records>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

// === impl Records ===

impl Records {
    /// Stores `resource`, giving it the next id of its type (`{prefix}-{n}`), and returns it.
    pub fn add(&mut self, prefix: &str, mut resource: Value) -> Value {
        let kind = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("Unknown")
            .to_owned();
        if resource.get("id").is_none() {
            let n = self.next.entry(kind.clone()).or_insert(0);
            *n += 1;
            resource["id"] = json!(format!("{prefix}-{n}"));
        }
        self.by_type.entry(kind).or_default().push(resource.clone());
        resource
    }

    /// Resources of `kind` about `subject` (`EE…`).
    pub fn about(&self, kind: &str, subject: &str) -> Vec<Value> {
        self.by_type.get(kind).map_or_else(Vec::new, |all| {
            all.iter()
                .filter(|r| subject_of(r).as_deref() == Some(subject))
                .cloned()
                .collect()
        })
    }

    /// How many resources it holds.
    pub fn len(&self) -> usize {
        self.by_type.values().map(Vec::len).sum()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn by_id(&self, kind: &str, id: &str) -> Option<&Value> {
        self.by_type
            .get(kind)?
            .iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
    }
}

// === impl FhirService ===

impl FhirService {
    /// Serves `records` on `listen` under `/fhir`.
    ///
    /// # Errors
    ///
    /// The address cannot be bound.
    pub async fn spawn(listen: SocketAddr, records: Records) -> std::io::Result<FhirService> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let records = Arc::new(Mutex::new(records));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&records));
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let until = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = backbone_server::serve_router(
                listener,
                app,
                backbone_server::Limits::default(),
                until,
            )
            .await
            {
                tracing::error!(error = %e, "demo FHIR service stopped");
            }
        });
        Ok(FhirService {
            addr,
            records,
            stop,
            task,
        })
    }

    /// The base URL the gateway forwards to.
    pub fn base_url(&self) -> String {
        format!("http://{}/fhir", self.addr)
    }

    /// Stops serving.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn handle(
    State(records): State<Arc<Mutex<Records>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let declared = headers
        .get("x-backbone-data-subject")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(rest) = uri.path().strip_prefix("/fhir/") else {
        return outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "this service serves /fhir/{type}",
        );
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let mut records = records.lock().unwrap_or_else(PoisonError::into_inner);
    match (method, segments.as_slice()) {
        (Method::GET, ["metadata"]) => fhir(StatusCode::OK, &capability()),
        (Method::GET, [kind]) if RESOURCE_TYPES.contains(kind) => {
            let patient =
                query_param(uri.query(), "patient").or_else(|| query_param(uri.query(), "subject"));
            let Some(patient) = patient else {
                return outcome(
                    StatusCode::BAD_REQUEST,
                    "required",
                    "search by ?patient=EE… (a personal code)",
                );
            };
            let patient = patient.trim_start_matches("Patient/").to_owned();
            if declared.as_deref().is_some_and(|d| d != patient) {
                return outcome(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the search names another person than the declared data subject",
                );
            }
            let found = records.about(kind, &patient);
            fhir(StatusCode::OK, &bundle(&found))
        }
        (Method::GET, [kind, id]) if RESOURCE_TYPES.contains(kind) => match records.by_id(kind, id)
        {
            Some(resource) if declared.is_none() || subject_of(resource) == declared => {
                fhir(StatusCode::OK, resource)
            }
            Some(_) => outcome(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the resource is about another person than the declared data subject",
            ),
            None => outcome(StatusCode::NOT_FOUND, "not-found", "no such resource"),
        },
        (Method::POST, [kind]) if RESOURCE_TYPES.contains(kind) => {
            if body.len() > MAX_RESOURCE_LEN {
                return outcome(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-costly",
                    "the resource is too large",
                );
            }
            let Ok(resource) = serde_json::from_slice::<Value>(&body) else {
                return outcome(StatusCode::BAD_REQUEST, "structure", "the body is not JSON");
            };
            if resource.get("resourceType").and_then(Value::as_str) != Some(kind) {
                return outcome(
                    StatusCode::BAD_REQUEST,
                    "structure",
                    "resourceType does not match the URL",
                );
            }
            if declared.is_some() && subject_of(&resource) != declared {
                return outcome(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the resource is about another person than the declared data subject",
                );
            }
            let stored = records.add(&kind.to_ascii_lowercase(), resource);
            fhir(StatusCode::CREATED, &stored)
        }
        _ => outcome(
            StatusCode::NOT_FOUND,
            "not-supported",
            "unknown resource type or interaction",
        ),
    }
}

/// The person a resource is about: `EE…`.
pub fn subject_of(resource: &Value) -> Option<String> {
    if resource.get("resourceType").and_then(Value::as_str) == Some("Patient") {
        return resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    let reference = resource
        .get("subject")
        .or_else(|| resource.get("patient"))?
        .get("reference")?
        .as_str()?;
    reference.strip_prefix("Patient/").map(str::to_owned)
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn fhir(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        value.to_string(),
    )
        .into_response()
}

fn outcome(status: StatusCode, code: &str, text: &str) -> Response {
    fhir(
        status,
        &json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}),
    )
}

fn bundle(entries: &[Value]) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "entry": entries.iter().map(|r| json!({"resource": r})).collect::<Vec<_>>(),
    })
}

fn capability() -> Value {
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{"mode": "server", "resource": RESOURCE_TYPES.iter().map(|t| json!({"type": t, "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "create"}]})).collect::<Vec<_>>()}],
    })
}

// --- resources ---

fn patient_ref(citizen: &Citizen) -> Value {
    json!({"reference": format!("Patient/{}", citizen.subject), "identifier": {"system": PERSONAL_CODE_SYSTEM, "value": citizen.code()}})
}

fn organization(member: &str, name: &str) -> Value {
    json!({"identifier": {"system": "urn:x-road:member", "value": member}, "display": name})
}

fn icd10(condition: &Condition) -> Value {
    json!({"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": condition.icd10, "display": condition.diagnosis}]})
}

fn atc(condition: &Condition) -> Value {
    json!({"coding": [{"system": "http://www.whocc.no/atc", "code": condition.atc, "display": condition.medicine}]})
}

/// A Patient.
pub fn patient(citizen: &Citizen) -> Value {
    json!({
        "resourceType": "Patient",
        "id": citizen.subject,
        "identifier": [{"system": PERSONAL_CODE_SYSTEM, "value": citizen.code()}],
        "name": [{"family": citizen.family, "given": [citizen.given]}],
        "gender": citizen.gender,
        "birthDate": citizen.birth_date,
    })
}

/// An Observation of `condition`'s LOINC code with a value in tenths.
pub fn observation(
    citizen: &Citizen,
    condition: &Condition,
    value_tenths: u32,
    date: &str,
    performer: Value,
) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": condition.loinc, "display": condition.observation}]},
        "subject": patient_ref(citizen),
        "effectiveDateTime": date,
        "performer": [performer],
        "valueQuantity": {"value": f64::from(value_tenths) / 10.0, "unit": condition.unit, "system": "http://unitsofmeasure.org", "code": condition.unit},
        "note": [{"text": format!("follow-up of {} ({})", condition.diagnosis, condition.icd10)}],
    })
}

/// A MedicationRequest (an e-prescription) for `condition`.
pub fn medication_request(
    citizen: &Citizen,
    condition: &Condition,
    date: &str,
    requester: Value,
) -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": atc(condition),
        "subject": patient_ref(citizen),
        "authoredOn": date,
        "requester": requester,
        "reasonCode": [icd10(condition)],
        "dosageInstruction": [{"text": condition.dosage}],
        "dispenseRequest": {"numberOfRepeatsAllowed": 2, "quantity": {"value": 30, "unit": "tablet"}},
    })
}

/// A MedicationDispense of a prescription.
pub fn medication_dispense(
    citizen: &Citizen,
    condition: &Condition,
    prescription: &str,
    date: &str,
    performer: Value,
) -> Value {
    json!({
        "resourceType": "MedicationDispense",
        "status": "completed",
        "medicationCodeableConcept": atc(condition),
        "subject": patient_ref(citizen),
        "authorizingPrescription": [{"reference": prescription}],
        "performer": [{"actor": performer}],
        "quantity": {"value": 30, "unit": "tablet"},
        "whenHandedOver": date,
    })
}

/// A referral letter (DocumentReference, LOINC 57133-1) for `condition`.
pub fn referral(citizen: &Citizen, condition: &Condition, date: &str, author: Value) -> Value {
    json!({
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "57133-1", "display": "Referral note"}]},
        "subject": patient_ref(citizen),
        "date": date,
        "author": [author],
        "description": format!("Referral to a specialist: {} ({})", condition.diagnosis, condition.icd10),
        "context": {"related": [icd10(condition)]},
        "content": [{"attachment": {"contentType": "text/plain", "title": "Referral"}}],
    })
}

/// A pharmacy Claim for reimbursement of a dispensing.
pub fn claim(
    citizen: &Citizen,
    condition: &Condition,
    dispense: &str,
    date: &str,
    amount_cents: u32,
    provider: Value,
    insurer: Value,
) -> Value {
    json!({
        "resourceType": "Claim",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "pharmacy"}]},
        "use": "claim",
        "patient": patient_ref(citizen),
        "created": date,
        "provider": provider,
        "insurer": insurer,
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": icd10(condition)}],
        "prescription": {"reference": dispense},
        "item": [{"sequence": 1, "productOrService": atc(condition), "net": {"value": f64::from(amount_cents) / 100.0, "currency": "EUR"}}],
    })
}

/// An organization reference for `member` (an X-Road member id).
pub fn org(member: &str, name: &str) -> Value {
    organization(member, name)
}

/// The records an agency starts with: every person's Patient for the hospital, the family
/// doctor and the insurer; the family doctor's observations and long-term prescriptions; the
/// hospital's observations for people with two conditions.
pub fn preload(
    role: super::network::Role,
    people: &[Citizen],
    member: &str,
    name: &str,
) -> Records {
    use super::network::Role;
    let mut records = Records::default();
    let prefix = match role {
        Role::Hospital => "ehr",
        Role::FamilyDoctor => "gp",
        Role::Pharmacy => "rx",
        Role::Insurer => "hif",
        Role::Portal => "portal",
    };
    for citizen in people {
        if matches!(role, Role::Hospital | Role::FamilyDoctor | Role::Insurer) {
            records.add(prefix, patient(citizen));
        }
        match role {
            Role::FamilyDoctor => {
                for (condition, value) in citizen.picture() {
                    records.add(
                        prefix,
                        observation(
                            citizen,
                            condition,
                            value,
                            "2026-01-15",
                            organization(member, name),
                        ),
                    );
                }
            }
            Role::Hospital if citizen.conditions.len() > 1 => {
                for (condition, value) in citizen.picture() {
                    records.add(
                        prefix,
                        observation(
                            citizen,
                            condition,
                            value,
                            "2025-11-03",
                            organization(member, name),
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    records
}
