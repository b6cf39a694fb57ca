//! The registry itself: administrative operations over a [`Store`], the certificate authority,
//! and the generation of signed global configurations.
//!
//! Every operation checks the current state and commits its records with an audit entry (who,
//! what, when) as one [`Change`]; operations run one at a time, so two concurrent requests to add
//! the same member cannot both succeed. Time is passed in.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use backbone_hsm::Signer;
use backbone_hsm::cert::{CertificateAuthority, Profile, Subject, Validity};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::conf::{FORMAT, GlobalConf, SignedConf, unix_seconds};
use crate::id::{
    ClientId, GatewayId, GroupId, InstanceId, MemberClass, MemberId, ServiceId, SubsystemId,
};
use crate::model::{
    Admin, Certificate, Gateway, GlobalGroup, Member, MemberClassEntry, Revocation,
    RevocationReason, Service, SigningCertificate, Subsystem, TimestampingService, check_address,
    check_text,
};
use crate::store::{AuditEntry, Change, Store, Table};

/// An issued certificate's row for the store: the table, the key and the encoded value.
type Issued = (Table, String, Vec<u8>);

/// How long the CA certificate is valid: long-lived roots are rotated by a new anchor, and twenty
/// years outlasts any deployment's first key ceremony.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86_400);
/// How long issued gateway and member certificates are valid: two years, as X-Road's CAs commonly
/// issue, so a lost key is also bounded in time.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(2 * 365 * 86_400);

const META_INSTANCE: &str = "instance";
const META_CA_CERT: &str = "ca_certificate";
const META_SERIAL: &str = "last_serial";
const META_VERSION: &str = "last_conf_version";
const META_ADMIN_TLS: &str = "admin_tls_certificate";

/// The registry: its store, its CA key and its configuration signing key.
#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn Store>,
    instance: InstanceId,
    ca_signer: Arc<dyn Signer>,
    ca_certificate: Certificate,
    conf_signer: Arc<dyn Signer>,
    /// One operation at a time: checks and the commit that follows them must not interleave.
    admin: Mutex<()>,
}

// === impl Registry ===

impl Registry {
    /// Creates a new instance in an empty store: records the instance id and a self-signed CA
    /// certificate for `ca_signer`'s key.
    ///
    /// # Errors
    ///
    /// [`Error::Duplicate`] when the store already holds an instance.
    pub fn create(
        store: Arc<dyn Store>,
        instance: InstanceId,
        ca_signer: Arc<dyn Signer>,
        conf_signer: Arc<dyn Signer>,
        actor: &str,
        now: SystemTime,
    ) -> Result<Self, Error> {
        if let Some(existing) = store.get(Table::Meta, META_INSTANCE).map_err(store_error)? {
            return Err(Error::Duplicate {
                kind: "instance",
                id: String::from_utf8_lossy(&existing).into_owned(),
            });
        }
        let subject = Subject {
            common_name: format!("{instance} registry CA"),
            organization: Some(format!("{instance} backbone registry")),
            ..Subject::default()
        };
        let validity = Validity {
            not_before: now,
            not_after: now + DEFAULT_CA_VALIDITY,
            serial: vec![1],
        };
        let der = CertificateAuthority::self_signed(ca_signer.as_ref(), &subject, &validity)?
            .certificate_der()
            .to_vec();
        let ca_certificate = Certificate::from_der(der)?;
        let change = Change {
            puts: vec![
                (
                    Table::Meta,
                    META_INSTANCE.into(),
                    instance.as_str().as_bytes().to_vec(),
                ),
                (
                    Table::Meta,
                    META_CA_CERT.into(),
                    ca_certificate.der().to_vec(),
                ),
                (Table::Meta, META_SERIAL.into(), 1u64.to_be_bytes().to_vec()),
            ],
            deletes: vec![],
            audit: Some(audit(actor, now, format!("create instance {instance}"))),
        };
        store.commit(change).map_err(store_error)?;
        Ok(Registry {
            store,
            instance,
            ca_signer,
            ca_certificate,
            conf_signer,
            admin: Mutex::new(()),
        })
    }

    /// Opens the instance a store holds.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an empty store; [`Error::Refused`] when `ca_signer` is not the key
    /// of the stored CA certificate.
    pub fn open(
        store: Arc<dyn Store>,
        ca_signer: Arc<dyn Signer>,
        conf_signer: Arc<dyn Signer>,
    ) -> Result<Self, Error> {
        let instance = store
            .get(Table::Meta, META_INSTANCE)
            .map_err(store_error)?
            .ok_or_else(|| Error::NotFound {
                kind: "instance",
                id: "(run `backbone registry init`)".into(),
            })?;
        let instance = InstanceId::new(String::from_utf8_lossy(&instance).into_owned())?;
        let der = store
            .get(Table::Meta, META_CA_CERT)
            .map_err(store_error)?
            .ok_or(Error::Store("CA certificate missing".into()))?;
        CertificateAuthority::from_certificate(ca_signer.as_ref(), &der).map_err(|e| {
            Error::Refused(format!(
                "the CA key does not match the stored CA certificate: {e}"
            ))
        })?;
        let ca_certificate = Certificate::from_der(der)?;
        Ok(Registry {
            store,
            instance,
            ca_signer,
            ca_certificate,
            conf_signer,
            admin: Mutex::new(()),
        })
    }

    /// The instance.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The CA certificate.
    pub fn ca_certificate(&self) -> &Certificate {
        &self.ca_certificate
    }

    /// Adds a member class.
    pub fn add_member_class(
        &self,
        actor: &str,
        now: SystemTime,
        code: MemberClass,
        description: &str,
    ) -> Result<(), Error> {
        check_text("member class description", description)?;
        let _guard = self.lock()?;
        self.absent(Table::MemberClasses, "member class", code.as_str())?;
        let entry = MemberClassEntry {
            code: code.clone(),
            description: description.to_owned(),
        };
        self.commit(
            actor,
            now,
            format!("add member class {code}"),
            vec![put(Table::MemberClasses, code.as_str(), &entry)?],
        )
    }

    /// Adds a member of an existing class of this instance.
    pub fn add_member(
        &self,
        actor: &str,
        now: SystemTime,
        id: MemberId,
        name: &str,
    ) -> Result<(), Error> {
        check_text("member name", name)?;
        self.same_instance(id.instance(), &id)?;
        let _guard = self.lock()?;
        self.present(Table::MemberClasses, "member class", id.class().as_str())?;
        self.absent(Table::Members, "member", &id.to_string())?;
        let member = Member {
            id: id.clone(),
            name: name.to_owned(),
        };
        self.commit(
            actor,
            now,
            format!("add member {id}"),
            vec![put(Table::Members, &id.to_string(), &member)?],
        )
    }

    /// Adds a subsystem to an existing member.
    pub fn add_subsystem(
        &self,
        actor: &str,
        now: SystemTime,
        id: SubsystemId,
    ) -> Result<(), Error> {
        let _guard = self.lock()?;
        self.present(Table::Members, "member", &id.member().to_string())?;
        self.absent(Table::Subsystems, "subsystem", &id.to_string())?;
        let subsystem = Subsystem { id: id.clone() };
        self.commit(
            actor,
            now,
            format!("add subsystem {id}"),
            vec![put(Table::Subsystems, &id.to_string(), &subsystem)?],
        )
    }

    /// Registers a gateway of an existing member, without a certificate yet.
    pub fn add_gateway(
        &self,
        actor: &str,
        now: SystemTime,
        id: GatewayId,
        address: &str,
    ) -> Result<(), Error> {
        check_address("gateway address", address)?;
        let _guard = self.lock()?;
        self.present(Table::Members, "member", &id.owner().to_string())?;
        self.absent(Table::Gateways, "gateway", &id.to_string())?;
        let gateway = Gateway {
            address: address.to_owned(),
            id: id.clone(),
            tls_certificate: None,
        };
        self.commit(
            actor,
            now,
            format!("add gateway {id} at {address}"),
            vec![put(Table::Gateways, &id.to_string(), &gateway)?],
        )
    }

    /// Issues a gateway's TLS authentication certificate from its request, replacing (and
    /// revoking as superseded) the one it had.
    pub fn issue_tls_certificate(
        &self,
        actor: &str,
        now: SystemTime,
        id: &GatewayId,
        csr: &[u8],
    ) -> Result<Certificate, Error> {
        let request = crate::csr::intake(csr)?;
        let _guard = self.lock()?;
        let mut gateway: Gateway = self.record(Table::Gateways, "gateway", &id.to_string())?;
        let member: Member = self.record(Table::Members, "member", &id.owner().to_string())?;
        let subject = Subject {
            common_name: id.server_code().to_owned(),
            organization: Some(member.name),
            serial_number: Some(id.owner().to_string()),
            ..Subject::default()
        };
        let (certificate, serial_put) =
            self.issue(&request.public_key, &subject, Profile::TlsAuth, now)?;
        let mut puts = vec![serial_put];
        if let Some(old) = gateway.tls_certificate.replace(certificate.clone()) {
            puts.push(put(
                Table::Revocations,
                &old.serial(),
                &revocation(&old, RevocationReason::Superseded, now),
            )?);
        }
        puts.push(put(Table::Gateways, &id.to_string(), &gateway)?);
        let action = format!(
            "issue TLS certificate {} to gateway {id}",
            certificate.serial()
        );
        self.commit(actor, now, action, puts)?;
        Ok(certificate)
    }

    /// Issues a member signing certificate from the member's request.
    pub fn issue_signing_certificate(
        &self,
        actor: &str,
        now: SystemTime,
        member_id: &MemberId,
        csr: &[u8],
    ) -> Result<Certificate, Error> {
        let request = crate::csr::intake(csr)?;
        let _guard = self.lock()?;
        let member: Member = self.record(Table::Members, "member", &member_id.to_string())?;
        let subject = Subject {
            common_name: member_id.code().to_owned(),
            organization: Some(member.name),
            serial_number: Some(format!("{}/{}", member_id.instance(), member_id.class())),
            ..Subject::default()
        };
        let (certificate, serial_put) =
            self.issue(&request.public_key, &subject, Profile::MemberSigning, now)?;
        let record = SigningCertificate {
            certificate: certificate.clone(),
            member: member_id.clone(),
        };
        let puts = vec![
            serial_put,
            put(Table::SigningCertificates, &certificate.serial(), &record)?,
        ];
        self.commit(
            actor,
            now,
            format!(
                "issue signing certificate {} to member {member_id}",
                certificate.serial()
            ),
            puts,
        )?;
        Ok(certificate)
    }

    /// Revokes a certificate by serial (lower-case hex): it leaves the configuration and is listed
    /// as revoked from the next version on.
    pub fn revoke(
        &self,
        actor: &str,
        now: SystemTime,
        serial: &str,
        reason: RevocationReason,
    ) -> Result<(), Error> {
        let _guard = self.lock()?;
        self.absent(Table::Revocations, "revocation of certificate", serial)?;
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        let admins: Vec<Admin> = self.all(Table::Admins)?;
        if let Some(record) = self.find::<SigningCertificate>(Table::SigningCertificates, serial)? {
            puts.push(put(
                Table::Revocations,
                serial,
                &revocation(&record.certificate, reason, now),
            )?);
            deletes.push((Table::SigningCertificates, serial.to_owned()));
        } else if let Some(admin) = admins.iter().find(|a| a.certificate.serial() == serial) {
            puts.push(put(
                Table::Revocations,
                serial,
                &revocation(&admin.certificate, reason, now),
            )?);
            deletes.push((Table::Admins, admin.certificate.fingerprint()));
        } else {
            let gateways: Vec<Gateway> = self.all(Table::Gateways)?;
            let mut gateway = gateways
                .into_iter()
                .find(|g| {
                    g.tls_certificate
                        .as_ref()
                        .is_some_and(|c| c.serial() == serial)
                })
                .ok_or_else(|| Error::NotFound {
                    kind: "certificate with serial",
                    id: serial.to_owned(),
                })?;
            if let Some(old) = gateway.tls_certificate.take() {
                puts.push(put(
                    Table::Revocations,
                    serial,
                    &revocation(&old, reason, now),
                )?);
            }
            puts.push(put(Table::Gateways, &gateway.id.to_string(), &gateway)?);
        }
        let change = Change {
            puts,
            deletes,
            audit: Some(audit(
                actor,
                now,
                format!("revoke certificate {serial} ({reason:?})"),
            )),
        };
        self.store.commit(change).map_err(store_error)?;
        Ok(())
    }

    /// Adds a registry administrator: issues a TLS client certificate for the key in `csr`
    /// (common name `name`) and registers it for the HTTPS admin API.
    pub fn add_admin(
        &self,
        actor: &str,
        now: SystemTime,
        name: &str,
        csr: &[u8],
    ) -> Result<Certificate, Error> {
        check_text("administrator name", name)?;
        let request = crate::csr::intake(csr)?;
        let _guard = self.lock()?;
        let admins: Vec<Admin> = self.all(Table::Admins)?;
        if admins.iter().any(|a| a.name == name) {
            return Err(Error::Duplicate {
                kind: "administrator",
                id: name.to_owned(),
            });
        }
        let subject = Subject {
            common_name: name.to_owned(),
            organizational_unit: Some(format!("{} registry administrators", self.instance)),
            ..Subject::default()
        };
        let (certificate, serial_put) =
            self.issue(&request.public_key, &subject, Profile::TlsAuth, now)?;
        let admin = Admin {
            certificate: certificate.clone(),
            name: name.to_owned(),
        };
        let puts = vec![
            serial_put,
            put(Table::Admins, &certificate.fingerprint(), &admin)?,
        ];
        self.commit(
            actor,
            now,
            format!(
                "add administrator {name} with certificate {}",
                certificate.serial()
            ),
            puts,
        )?;
        Ok(certificate)
    }

    /// The administrator whose certificate is exactly `der`, if registered and not revoked.
    ///
    /// # Errors
    ///
    /// Store failures.
    pub fn admin_for(&self, der: &[u8]) -> Result<Option<Admin>, Error> {
        let admin: Option<Admin> = self.find(Table::Admins, &crate::model::fingerprint(der))?;
        Ok(admin.filter(|a| a.certificate.der() == der))
    }

    /// The certificate of the HTTPS admin API's own key: issued by the CA on first use and
    /// again when the key changes, kept in the store.
    pub fn admin_tls_certificate(
        &self,
        key: &backbone_hsm::PublicKey,
        now: SystemTime,
    ) -> Result<Certificate, Error> {
        let _guard = self.lock()?;
        if let Some(bytes) = self
            .store
            .get(Table::Meta, META_ADMIN_TLS)
            .map_err(store_error)?
        {
            let certificate = Certificate::from_der(bytes)?;
            let same_key = x509_parser::parse_x509_certificate(certificate.der())
                .is_ok_and(|(_, c)| c.tbs_certificate.subject_pki.raw == key.spki_der());
            if same_key {
                return Ok(certificate);
            }
        }
        let subject = Subject {
            common_name: format!("{} registry admin API", self.instance),
            ..Subject::default()
        };
        let (certificate, serial_put) = self.issue(key, &subject, Profile::TlsAuth, now)?;
        let puts = vec![
            serial_put,
            (
                Table::Meta,
                META_ADMIN_TLS.to_owned(),
                certificate.der().to_vec(),
            ),
        ];
        self.commit(
            "registry",
            now,
            format!("issue admin API TLS certificate {}", certificate.serial()),
            puts,
        )?;
        Ok(certificate)
    }

    /// Adds a service of an existing subsystem to the catalogue.
    pub fn add_service(
        &self,
        actor: &str,
        now: SystemTime,
        id: ServiceId,
        description: &str,
        personal_health_data: bool,
    ) -> Result<(), Error> {
        check_text("service description", description)?;
        let _guard = self.lock()?;
        self.present(Table::Subsystems, "subsystem", &id.provider().to_string())?;
        self.absent(Table::Services, "service", &id.to_string())?;
        let service = Service {
            description: description.to_owned(),
            id: id.clone(),
            personal_health_data,
        };
        let action = format!("add service {id} (personal health data: {personal_health_data})");
        self.commit(
            actor,
            now,
            action,
            vec![put(Table::Services, &id.to_string(), &service)?],
        )
    }

    /// Adds an empty global group.
    pub fn add_group(
        &self,
        actor: &str,
        now: SystemTime,
        id: GroupId,
        description: &str,
    ) -> Result<(), Error> {
        check_text("group description", description)?;
        self.same_instance(id.instance(), &id)?;
        let _guard = self.lock()?;
        self.absent(Table::Groups, "global group", &id.to_string())?;
        let group = GlobalGroup {
            description: description.to_owned(),
            id: id.clone(),
            members: vec![],
        };
        self.commit(
            actor,
            now,
            format!("add global group {id}"),
            vec![put(Table::Groups, &id.to_string(), &group)?],
        )
    }

    /// Adds an existing member or subsystem to a global group.
    pub fn add_group_member(
        &self,
        actor: &str,
        now: SystemTime,
        id: &GroupId,
        client: ClientId,
    ) -> Result<(), Error> {
        let _guard = self.lock()?;
        let mut group: GlobalGroup = self.record(Table::Groups, "global group", &id.to_string())?;
        match &client {
            ClientId::Member(m) => self.present(Table::Members, "member", &m.to_string())?,
            ClientId::Subsystem(s) => {
                self.present(Table::Subsystems, "subsystem", &s.to_string())?
            }
        }
        if group.members.contains(&client) {
            return Err(Error::Duplicate {
                kind: "group member",
                id: format!("{client} in {id}"),
            });
        }
        group.members.push(client.clone());
        group.members.sort();
        self.commit(
            actor,
            now,
            format!("add {client} to global group {id}"),
            vec![put(Table::Groups, &id.to_string(), &group)?],
        )
    }

    /// Approves a timestamping service.
    pub fn add_timestamping_service(
        &self,
        actor: &str,
        now: SystemTime,
        service: TimestampingService,
    ) -> Result<(), Error> {
        check_text("timestamping service name", &service.name)?;
        for (what, url) in [
            ("aggregator URL", &service.aggregator_url),
            ("extender URL", &service.extender_url),
            ("publications URL", &service.publications_url),
        ] {
            check_address(what, url)?;
        }
        let _guard = self.lock()?;
        self.absent(Table::Timestamping, "timestamping service", &service.name)?;
        let action = format!("approve timestamping service {}", service.name);
        self.commit(
            actor,
            now,
            action,
            vec![put(Table::Timestamping, &service.name, &service)?],
        )
    }

    /// The global configuration as the records stand, at the next version, signed. Versions are
    /// counted in the store, so they keep increasing across restarts.
    pub fn generate(&self, now: SystemTime, validity: Duration) -> Result<SignedConf, Error> {
        let _guard = self.lock()?;
        let version = self.counter(META_VERSION)? + 1;
        let generated_at = unix_seconds(now);
        let mut conf = GlobalConf {
            ca_certificate: self.ca_certificate.clone(),
            expires_at: generated_at.saturating_add(validity.as_secs()),
            format: FORMAT,
            gateways: self.all(Table::Gateways)?,
            generated_at,
            global_groups: self.all(Table::Groups)?,
            instance: self.instance.clone(),
            member_classes: self.all(Table::MemberClasses)?,
            members: self.all(Table::Members)?,
            revoked: self.all(Table::Revocations)?,
            services: self.all(Table::Services)?,
            signing_certificates: self.all(Table::SigningCertificates)?,
            subsystems: self.all(Table::Subsystems)?,
            timestamping_services: self.all(Table::Timestamping)?,
            version,
        };
        conf.canonicalize();
        let signed = SignedConf::sign(&conf, self.conf_signer.as_ref())?;
        // The version counter and the archived envelope commit together: every version handed
        // out can be shown later.
        let bump = Change {
            puts: vec![
                (
                    Table::Meta,
                    META_VERSION.into(),
                    version.to_be_bytes().to_vec(),
                ),
                (Table::Archive, archive_key(version), signed.encode()),
            ],
            ..Change::default()
        };
        self.store.commit(bump).map_err(store_error)?;
        Ok(signed)
    }

    /// The configuration envelope published as `version`, if it was.
    ///
    /// # Errors
    ///
    /// Store failures.
    pub fn archived(&self, version: u64) -> Result<Option<Vec<u8>>, Error> {
        self.store
            .get(Table::Archive, &archive_key(version))
            .map_err(store_error)
    }

    /// Keeps the keyless signature over the envelope of `version` beside it.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a version never generated; store failures.
    pub fn set_keyless_signature(&self, version: u64, signature: &[u8]) -> Result<(), Error> {
        if self.archived(version)?.is_none() {
            return Err(Error::NotFound {
                kind: "configuration version",
                id: version.to_string(),
            });
        }
        let put = (
            Table::Archive,
            format!("{}.ksig", archive_key(version)),
            signature.to_vec(),
        );
        self.store
            .commit(Change {
                puts: vec![put],
                ..Change::default()
            })
            .map_err(store_error)?;
        Ok(())
    }

    /// The keyless signature over the envelope of `version`, once the timestamping service gave it.
    ///
    /// # Errors
    ///
    /// Store failures.
    pub fn keyless_signature(&self, version: u64) -> Result<Option<Vec<u8>>, Error> {
        self.store
            .get(Table::Archive, &format!("{}.ksig", archive_key(version)))
            .map_err(store_error)
    }

    /// Audit entries from sequence number `from` on, at most `limit`.
    pub fn audit_log(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        self.store.audit(from, limit).map_err(store_error)
    }

    // --- helpers ---

    fn issue(
        &self,
        key: &backbone_hsm::PublicKey,
        subject: &Subject,
        profile: Profile,
        now: SystemTime,
    ) -> Result<(Certificate, Issued), Error> {
        let serial = self.counter(META_SERIAL)? + 1;
        let validity = Validity {
            not_before: now,
            not_after: now + DEFAULT_CERT_VALIDITY,
            serial: serial.to_be_bytes().to_vec(),
        };
        let ca = CertificateAuthority::from_certificate(
            self.ca_signer.as_ref(),
            self.ca_certificate.der(),
        )?;
        let der = ca.issue(key, subject, profile, &validity)?;
        Ok((
            Certificate::from_der(der)?,
            (
                Table::Meta,
                META_SERIAL.into(),
                serial.to_be_bytes().to_vec(),
            ),
        ))
    }

    fn counter(&self, key: &str) -> Result<u64, Error> {
        match self.store.get(Table::Meta, key).map_err(store_error)? {
            None => Ok(0),
            Some(bytes) => Ok(u64::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| Error::decode("stored counter", key))?,
            )),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, ()>, Error> {
        self.admin
            .lock()
            .map_err(|_| Error::Unreachable("admin lock poisoned"))
    }

    fn same_instance(
        &self,
        instance: &InstanceId,
        id: &impl std::fmt::Display,
    ) -> Result<(), Error> {
        if instance == &self.instance {
            return Ok(());
        }
        Err(Error::Refused(format!(
            "{id} is not in instance {}",
            self.instance
        )))
    }

    fn commit(
        &self,
        actor: &str,
        now: SystemTime,
        action: String,
        puts: Vec<(Table, String, Vec<u8>)>,
    ) -> Result<(), Error> {
        let change = Change {
            puts,
            deletes: vec![],
            audit: Some(audit(actor, now, action)),
        };
        self.store.commit(change).map_err(store_error)?;
        Ok(())
    }

    fn absent(&self, table: Table, kind: &'static str, key: &str) -> Result<(), Error> {
        match self.store.get(table, key).map_err(store_error)? {
            Some(_) => Err(Error::Duplicate {
                kind,
                id: key.to_owned(),
            }),
            None => Ok(()),
        }
    }

    fn present(&self, table: Table, kind: &'static str, key: &str) -> Result<(), Error> {
        match self.store.get(table, key).map_err(store_error)? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound {
                kind,
                id: key.to_owned(),
            }),
        }
    }

    fn find<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, Error> {
        let Some(bytes) = self.store.get(table, key).map_err(store_error)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::decode("stored record", e))
    }

    fn record<T: DeserializeOwned>(
        &self,
        table: Table,
        kind: &'static str,
        key: &str,
    ) -> Result<T, Error> {
        self.find(table, key)?.ok_or_else(|| Error::NotFound {
            kind,
            id: key.to_owned(),
        })
    }

    fn all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, Error> {
        let values = self.store.list(table).map_err(store_error)?;
        values
            .iter()
            .map(|v| serde_json::from_slice(v).map_err(|e| Error::decode("stored record", e)))
            .collect()
    }
}

fn put<T: Serialize>(
    table: Table,
    key: &str,
    value: &T,
) -> Result<(Table, String, Vec<u8>), Error> {
    let bytes = serde_json::to_vec(value).map_err(|_| Error::Unreachable("records serialise"))?;
    Ok((table, key.to_owned(), bytes))
}

/// Zero-padded so that the archive lists in version order.
fn archive_key(version: u64) -> String {
    format!("{version:020}")
}

fn audit(actor: &str, now: SystemTime, action: String) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: unix_seconds(now),
        actor: actor.to_owned(),
        action,
    }
}

fn revocation(certificate: &Certificate, reason: RevocationReason, now: SystemTime) -> Revocation {
    Revocation {
        reason,
        revoked_at: unix_seconds(now),
        serial: certificate.serial(),
    }
}

fn store_error(e: crate::store::StoreError) -> Error {
    Error::Store(e.0)
}
