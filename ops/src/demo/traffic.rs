//! The scenario, sent through the gateways exactly as the agencies' information systems would:
//! plain HTTP to their own gateway's client port, X-Road REST r1 paths and headers, with the data
//! subject and purpose of use every health exchange declares.
//!
//! Per person: a referral (family doctor → hospital, `POST DocumentReference`, TREAT), an
//! e-prescription (family doctor → pharmacy, `POST MedicationRequest`, TREAT), the dispensing
//! (the pharmacy reads the prescription from the family doctor, `GET MedicationRequest`, TREAT,
//! and records a MedicationDispense in its own system), and the reimbursement claim (pharmacy →
//! Health Insurance Fund, `POST Claim`, HPAYMT). Once per run, an emergency: the hospital reads
//! the family doctor's observations (ETREAT) with the doctor named in `X-Road-UserId`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::data::{Citizen, personal_code};
use super::fhir::{self, Records};
use super::network::{Agency, Network, Role};
use crate::Error;
use backbone_gateway::connect::GatewayClient;

/// Scenarios in flight at once.
pub const CONCURRENCY: usize = 8;

/// One exchange the demo made.
#[derive(Clone, Debug, Serialize)]
pub struct Exchange {
    /// The scenario step.
    pub step: &'static str,
    /// The client subsystem.
    pub client: String,
    /// The client agency (its directory under the data directory).
    pub client_agency: &'static str,
    /// The provider agency.
    pub provider_agency: &'static str,
    /// The service.
    pub service: String,
    /// HTTP method and path below the service.
    pub request: String,
    /// The person.
    pub data_subject: String,
    /// The purpose of use.
    pub purpose_of_use: &'static str,
    /// The X-Road message id (the same in both gateways' logs).
    pub message_id: String,
    /// The HTTP status the client got.
    pub status: u16,
}

/// What the traffic needs from the network, cheap to clone into tasks.
#[derive(Clone, Debug)]
pub struct Traffic {
    gateways: Vec<(Role, GatewayClient)>,
    family_doctor: Arc<Mutex<Records>>,
    pharmacy: Arc<Mutex<Records>>,
    /// Exchanges made.
    pub done: Arc<AtomicU64>,
    /// Exchanges that failed.
    pub failed: Arc<AtomicU64>,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
}

impl Traffic {
    /// For `network`.
    ///
    /// # Errors
    ///
    /// A service is missing (a bug) or the HTTP client cannot be built.
    pub fn new(network: &Network) -> Result<Traffic, Error> {
        let records = |role| {
            network
                .node(role)
                .and_then(|n| n.service.as_ref())
                .map(|s| Arc::clone(&s.records))
                .ok_or(Error::Unreachable("a demo service is missing"))
        };
        Ok(Traffic {
            gateways: network
                .nodes
                .iter()
                .map(|n| {
                    (
                        n.agency.role,
                        n.system.clone().with_timeout(Duration::from_secs(30)),
                    )
                })
                .collect(),
            family_doctor: records(Role::FamilyDoctor)?,
            pharmacy: records(Role::Pharmacy)?,
            done: Arc::default(),
            failed: Arc::default(),
            exchanges: Arc::default(),
        })
    }

    /// Every exchange made so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs the scenario for each of `people`, [`CONCURRENCY`] at a time, the emergency access
    /// first when `emergency` is set.
    pub async fn run(&self, people: Vec<Citizen>, emergency: bool, today: &str) {
        if emergency && let Some(first) = people.first() {
            self.emergency(first).await;
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for citizen in people {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                break;
            };
            let traffic = self.clone();
            let today = today.to_owned();
            tasks.spawn(async move {
                traffic.scenario(&citizen, &today).await;
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// One person's referral, prescription, dispensing and claim.
    async fn scenario(&self, citizen: &Citizen, today: &str) {
        let Some((condition, _)) = citizen.picture().next() else {
            return;
        };
        let gp = Agency::of(Role::FamilyDoctor);
        let pharmacy = Agency::of(Role::Pharmacy);
        let hospital = Agency::of(Role::Hospital);
        let insurer = Agency::of(Role::Insurer);
        let gp_org = fhir::org(gp.member, gp.name);
        let pharmacy_org = fhir::org(pharmacy.member, pharmacy.name);

        let referral = fhir::referral(citizen, condition, today, gp_org.clone());
        self.call(
            "referral",
            gp,
            hospital,
            "POST",
            "/DocumentReference",
            citizen,
            "TREAT",
            None,
            Some(&referral),
        )
        .await;

        let prescription = self
            .family_doctor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(
                "gp",
                fhir::medication_request(citizen, condition, today, gp_org),
            );
        self.call(
            "e-prescription",
            gp,
            pharmacy,
            "POST",
            "/MedicationRequest",
            citizen,
            "TREAT",
            None,
            Some(&prescription),
        )
        .await;

        let query = format!("/MedicationRequest?patient={}", citizen.subject);
        let found = self
            .call(
                "dispensing",
                pharmacy,
                gp,
                "GET",
                &query,
                citizen,
                "TREAT",
                None,
                None,
            )
            .await;
        let prescription_id = found
            .as_ref()
            .and_then(|bundle| {
                bundle
                    .get("entry")?
                    .as_array()?
                    .last()?
                    .get("resource")?
                    .get("id")?
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let dispense = self
            .pharmacy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(
                "rx",
                fhir::medication_dispense(
                    citizen,
                    condition,
                    &format!("MedicationRequest/{prescription_id}"),
                    today,
                    pharmacy_org.clone(),
                ),
            );
        let dispense_id = dispense
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // A plausible price from the ATC code, 2–40 euros.
        let cents = 200 + condition.atc.bytes().map(u32::from).sum::<u32>() * 7 % 3800;
        let claim = fhir::claim(
            citizen,
            condition,
            &format!("MedicationDispense/{dispense_id}"),
            today,
            cents,
            pharmacy_org,
            fhir::org(insurer.member, insurer.name),
        );
        self.call(
            "reimbursement",
            pharmacy,
            insurer,
            "POST",
            "/Claim",
            citizen,
            "HPAYMT",
            None,
            Some(&claim),
        )
        .await;
    }

    /// The hospital's emergency access to the family doctor's observations.
    async fn emergency(&self, citizen: &Citizen) {
        // The emergency physician: a synthetic personal code, like everyone's here.
        let doctor = format!("EE{}", personal_code(true, 1978, 4, 12, 28));
        let query = format!("/Observation?patient={}", citizen.subject);
        let (hospital, gp) = (Agency::of(Role::Hospital), Agency::of(Role::FamilyDoctor));
        self.call(
            "emergency access",
            hospital,
            gp,
            "GET",
            &query,
            citizen,
            "ETREAT",
            Some(&doctor),
            None,
        )
        .await;
    }

    /// One exchange through `from`'s gateway; the JSON answer when it succeeded.
    #[allow(clippy::too_many_arguments)] // One per header of the exchange.
    async fn call(
        &self,
        step: &'static str,
        from: &'static Agency,
        to: &'static Agency,
        method: &str,
        path: &str,
        citizen: &Citizen,
        purpose: &'static str,
        user: Option<&str>,
        body: Option<&Value>,
    ) -> Option<Value> {
        let gateway = self
            .gateways
            .iter()
            .find(|(role, _)| *role == from.role)
            .map(|(_, client)| client)?;
        let service = to.fhir_service();
        let target = format!("/r1/{service}{path}");
        let mut request = match method {
            "POST" => gateway.post(target),
            _ => gateway.get(target),
        }
        .header("X-Road-Client", from.client())
        .header("X-Backbone-Data-Subject", citizen.subject.as_str())
        .header("X-Backbone-Purpose-Of-Use", purpose)
        .header("Accept", fhir::FHIR_JSON);
        if let Some(user) = user {
            request = request.header("X-Road-UserId", user);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", fhir::FHIR_JSON)
                .body(body.to_string());
        }
        let (status, message_id, answer) = match request.send().await {
            Ok(answer) => {
                let status = answer.status.as_u16();
                let id = answer
                    .headers
                    .get("x-road-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = serde_json::from_slice::<Value>(&answer.body).ok();
                (status, id, body)
            }
            Err(e) => {
                tracing::warn!(step, error = %e, "exchange failed");
                (0, String::new(), None)
            }
        };
        let ok = (200..300).contains(&status);
        self.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(step, status, client = %from.client(), %service, "exchange refused");
        }
        let path_only = path.split('?').next().unwrap_or(path);
        self.exchanges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Exchange {
                step,
                client: from.client(),
                client_agency: from.slug,
                provider_agency: to.slug,
                service,
                request: format!("{method} {path_only}"),
                data_subject: citizen.subject.clone(),
                purpose_of_use: purpose,
                message_id,
                status,
            });
        if ok { answer } else { None }
    }
}

/// Exchanges per scenario person, and for the emergency.
pub const EXCHANGES_PER_PERSON: u64 = 4;
