//! Administrative operations as values: the CLI builds one and either applies it to a local store
//! or sends it to the HTTPS admin API, which applies it the same way. One code path for both, so
//! the API and the CLI cannot drift apart.
//!
//! The JSON form is the admin API's request body (`POST /admin/v1/operations`), documented in
//! `docs/admin-api.md`: an object with `"op"` naming the operation and its fields beside it;
//! unknown fields are refused.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::id::{ClientId, GatewayId, GroupId, MemberClass, MemberId, ServiceId, SubsystemId};
use crate::model::{Certificate, RevocationReason, TimestampingService};
use crate::{Error, Registry};

/// Largest JSON body of one operation: a CSR or a certificate in PEM is a few KiB.
pub const MAX_OPERATION_LEN: usize = 64 * 1024;

/// One administrative operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Add a member class.
    AddMemberClass {
        /// The class code, e.g. `GOV`.
        code: String,
        /// What the class is for.
        description: String,
    },
    /// Add a member of an existing class.
    AddMember {
        /// `INSTANCE/CLASS/CODE`.
        id: String,
        /// Its legal name.
        name: String,
    },
    /// Add a subsystem of an existing member.
    AddSubsystem {
        /// `INSTANCE/CLASS/CODE/SUBSYSTEM`.
        id: String,
    },
    /// Register a gateway of an existing member.
    AddGateway {
        /// `INSTANCE/CLASS/CODE/SERVERCODE`.
        id: String,
        /// `HOST:PORT` where peers connect.
        address: String,
    },
    /// Issue a gateway's TLS certificate from a PKCS#10 request.
    IssueTlsCertificate {
        /// The gateway id.
        gateway: String,
        /// The request, PEM.
        csr_pem: String,
    },
    /// Issue a member signing certificate from a PKCS#10 request.
    IssueSigningCertificate {
        /// The member id.
        member: String,
        /// The request, PEM.
        csr_pem: String,
    },
    /// Revoke a certificate by serial.
    Revoke {
        /// Lower-case hex serial.
        serial: String,
        /// Why.
        reason: RevocationReason,
    },
    /// Add a service of an existing subsystem to the catalogue.
    AddService {
        /// `INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE[/VERSION]`.
        id: String,
        /// What it does.
        description: String,
        /// Whether it carries personal health data (requests then need a data subject and a
        /// purpose of use).
        personal_health_data: bool,
    },
    /// Add an empty global group.
    AddGroup {
        /// `INSTANCE/CODE`.
        id: String,
        /// What the group is for.
        description: String,
    },
    /// Add a member or subsystem to a global group.
    AddGroupMember {
        /// The group id.
        group: String,
        /// A member or subsystem id.
        client: String,
    },
    /// Approve a timestamping service.
    AddTimestampingService {
        /// Unique name.
        name: String,
        /// Aggregator URL.
        aggregator_url: String,
        /// Extender URL.
        extender_url: String,
        /// Publications file URL.
        publications_url: String,
        /// The certificate whose key signs the publications file, PEM.
        publication_certificate_pem: String,
    },
    /// Add a registry administrator from a PKCS#10 request for their client key.
    AddAdmin {
        /// The administrator's name, as the audit log shows it.
        name: String,
        /// The request, PEM.
        csr_pem: String,
    },
}

/// What an operation produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// Done; nothing to hand back.
    Done,
    /// A certificate was issued.
    Certificate {
        /// Its serial, lower-case hex.
        serial: String,
        /// The certificate, PEM.
        certificate_pem: String,
    },
}

// === impl Operation ===

impl Operation {
    /// Applies the operation as `actor` at `now`.
    ///
    /// # Errors
    ///
    /// What the registry refuses: invalid ids, duplicates, unknown records, bad requests.
    pub fn apply(
        &self,
        registry: &Registry,
        actor: &str,
        now: SystemTime,
    ) -> Result<Outcome, Error> {
        match self {
            Operation::AddMemberClass { code, description } => registry
                .add_member_class(actor, now, MemberClass::new(code.clone())?, description)
                .map(done),
            Operation::AddMember { id, name } => registry
                .add_member(actor, now, id.parse::<MemberId>()?, name)
                .map(done),
            Operation::AddSubsystem { id } => registry
                .add_subsystem(actor, now, id.parse::<SubsystemId>()?)
                .map(done),
            Operation::AddGateway { id, address } => registry
                .add_gateway(actor, now, id.parse::<GatewayId>()?, address)
                .map(done),
            Operation::IssueTlsCertificate { gateway, csr_pem } => registry
                .issue_tls_certificate(
                    actor,
                    now,
                    &gateway.parse::<GatewayId>()?,
                    csr_pem.as_bytes(),
                )
                .map(issued),
            Operation::IssueSigningCertificate { member, csr_pem } => registry
                .issue_signing_certificate(
                    actor,
                    now,
                    &member.parse::<MemberId>()?,
                    csr_pem.as_bytes(),
                )
                .map(issued),
            Operation::Revoke { serial, reason } => {
                registry.revoke(actor, now, serial, *reason).map(done)
            }
            Operation::AddService {
                id,
                description,
                personal_health_data,
            } => registry
                .add_service(
                    actor,
                    now,
                    id.parse::<ServiceId>()?,
                    description,
                    *personal_health_data,
                )
                .map(done),
            Operation::AddGroup { id, description } => registry
                .add_group(actor, now, id.parse::<GroupId>()?, description)
                .map(done),
            Operation::AddGroupMember { group, client } => registry
                .add_group_member(
                    actor,
                    now,
                    &group.parse::<GroupId>()?,
                    client.parse::<ClientId>()?,
                )
                .map(done),
            Operation::AddTimestampingService {
                name,
                aggregator_url,
                extender_url,
                publications_url,
                publication_certificate_pem,
            } => {
                let service = TimestampingService {
                    aggregator_url: aggregator_url.clone(),
                    extender_url: extender_url.clone(),
                    name: name.clone(),
                    publication_certificate: certificate_from_pem(publication_certificate_pem)?,
                    publications_url: publications_url.clone(),
                };
                registry
                    .add_timestamping_service(actor, now, service)
                    .map(done)
            }
            Operation::AddAdmin { name, csr_pem } => registry
                .add_admin(actor, now, name, csr_pem.as_bytes())
                .map(issued),
        }
    }

    /// The operation's name as the JSON `op` field spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::AddMemberClass { .. } => "add_member_class",
            Operation::AddMember { .. } => "add_member",
            Operation::AddSubsystem { .. } => "add_subsystem",
            Operation::AddGateway { .. } => "add_gateway",
            Operation::IssueTlsCertificate { .. } => "issue_tls_certificate",
            Operation::IssueSigningCertificate { .. } => "issue_signing_certificate",
            Operation::Revoke { .. } => "revoke",
            Operation::AddService { .. } => "add_service",
            Operation::AddGroup { .. } => "add_group",
            Operation::AddGroupMember { .. } => "add_group_member",
            Operation::AddTimestampingService { .. } => "add_timestamping_service",
            Operation::AddAdmin { .. } => "add_admin",
        }
    }
}

fn done(_: ()) -> Outcome {
    Outcome::Done
}

fn issued(certificate: Certificate) -> Outcome {
    Outcome::Certificate {
        serial: certificate.serial(),
        certificate_pem: backbone_hsm::cert::pem("CERTIFICATE", certificate.der()),
    }
}

/// A certificate from PEM (or DER given as text, which fails to parse and is refused).
fn certificate_from_pem(pem: &str) -> Result<Certificate, Error> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::decode("certificate PEM", e))?;
    if parsed.label != "CERTIFICATE" {
        return Err(Error::decode(
            "certificate PEM",
            format!("a {} block, not a CERTIFICATE", parsed.label),
        ));
    }
    Certificate::from_der(parsed.contents)
}
