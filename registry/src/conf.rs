//! The global configuration: a versioned document, its canonical encoding, and the signed envelope
//! gateways download. Pure code: bytes in, values out; time is passed in.
//!
//! The format is specified in `registry/docs/global-conf.md` (it plays the part of X-Road's
//! PR-GCONF). In short: the document is canonical JSON (sorted keys, no whitespace, arrays sorted
//! by id); the envelope is `"BBGC" 01 alg len32 document len16 signature`, the signature being a
//! detached signature over the exact document bytes.
//!
//! ```text
//!  GlobalConf ─encode─▶ document bytes ─Signer─▶ SignedConf ─encode─▶ envelope bytes
//!  envelope bytes ─SignedConf::decode─▶ SignedConf ─verify(anchor key)─▶ GlobalConf
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backbone_hsm::{PublicKey, SignatureAlgorithm, Signer};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::id::InstanceId;
use crate::model::{
    Certificate, Gateway, GlobalGroup, Member, MemberClassEntry, Revocation, Service,
    SigningCertificate, Subsystem, TimestampingService,
};

/// The document format this code writes and reads.
pub const FORMAT: u32 = 1;
/// Largest document accepted: Estonia's X-Road has about 1,000 members and 3,000 subsystems; at
/// about 2 KiB per gateway or certificate entry that is well under 8 MiB, so 16 MiB leaves room to
/// grow while bounding what a hostile mirror can make a gateway allocate.
pub const MAX_CONF_LEN: usize = 16 * 1024 * 1024;
/// Largest signature accepted: an RSA-4096 signature is 512 bytes, every other algorithm less.
pub const MAX_SIGNATURE_LEN: usize = 512;
/// The first bytes of a signed envelope.
pub const MAGIC: [u8; 4] = *b"BBGC";
/// The envelope layout version.
pub const ENVELOPE_VERSION: u8 = 1;

/// The global configuration of one instance at one version.
///
/// Fields are in ascending order of their names: the canonical encoding writes them in declaration
/// order. Every list is sorted by its entries' identifiers ([`GlobalConf::canonicalize`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConf {
    /// The registry CA certificate every TLS and signing certificate chains to.
    pub ca_certificate: Certificate,
    /// End of validity, unix seconds. After it, gateways MUST fail closed.
    pub expires_at: u64,
    /// The document format, [`FORMAT`].
    pub format: u32,
    /// Gateways, sorted by id.
    pub gateways: Vec<Gateway>,
    /// When the registry generated this version, unix seconds.
    pub generated_at: u64,
    /// Global groups, sorted by id.
    pub global_groups: Vec<GlobalGroup>,
    /// The instance.
    pub instance: InstanceId,
    /// Member classes, sorted by code.
    pub member_classes: Vec<MemberClassEntry>,
    /// Members, sorted by id.
    pub members: Vec<Member>,
    /// Revoked certificates, sorted by serial; they appear nowhere else in the document.
    pub revoked: Vec<Revocation>,
    /// The service catalogue, sorted by id.
    pub services: Vec<Service>,
    /// Member signing certificates, sorted by member then serial.
    pub signing_certificates: Vec<SigningCertificate>,
    /// Subsystems, sorted by id.
    pub subsystems: Vec<Subsystem>,
    /// Approved timestamping services, sorted by name.
    pub timestamping_services: Vec<TimestampingService>,
    /// The version, strictly increasing from one document to the next.
    pub version: u64,
}

/// A configuration document with the registry's detached signature over its exact bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedConf {
    document: Vec<u8>,
    algorithm: SignatureAlgorithm,
    signature: Vec<u8>,
}

/// Unix seconds of a time; times before 1970 count as 0.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The time of a count of unix seconds.
pub fn from_unix_seconds(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Decodes a document without checking any signature.
///
/// Only for tools that show a configuration, for auditors that checked the signature themselves,
/// and for fuzzing. Gateways use [`SignedConf::verify`].
///
/// # Errors
///
/// [`Error::Decode`] when the bytes are over [`MAX_CONF_LEN`], are not the canonical encoding of a
/// [`FORMAT`] document, or hold a duplicate id.
pub fn parse_unverified(bytes: &[u8]) -> Result<GlobalConf, Error> {
    if bytes.len() > MAX_CONF_LEN {
        return Err(Error::decode(
            "global configuration",
            format!("{} bytes is over the limit of {MAX_CONF_LEN}", bytes.len()),
        ));
    }
    let conf: GlobalConf =
        serde_json::from_slice(bytes).map_err(|e| Error::decode("global configuration", e))?;
    if conf.format != FORMAT {
        return Err(Error::decode(
            "global configuration",
            format!(
                "format {} is not the supported format {FORMAT}",
                conf.format
            ),
        ));
    }
    conf.check_sorted()?;
    if conf.encode()? != bytes {
        return Err(Error::decode(
            "global configuration",
            "not in canonical form (see docs/global-conf.md)",
        ));
    }
    Ok(conf)
}

// === impl GlobalConf ===

impl GlobalConf {
    /// The canonical encoding: the bytes that are signed.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`] only: serialising these types cannot fail.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|_| Error::Unreachable("global configuration serialises"))
    }

    /// Sorts every list by its entries' identifiers, as the canonical encoding requires.
    pub fn canonicalize(&mut self) {
        self.gateways.sort_by(|a, b| a.id.cmp(&b.id));
        self.global_groups.sort_by(|a, b| a.id.cmp(&b.id));
        for g in &mut self.global_groups {
            g.members.sort();
        }
        self.member_classes.sort_by(|a, b| a.code.cmp(&b.code));
        self.members.sort_by(|a, b| a.id.cmp(&b.id));
        self.revoked.sort_by(|a, b| a.serial.cmp(&b.serial));
        self.services.sort_by(|a, b| a.id.cmp(&b.id));
        self.signing_certificates.sort_by_key(signing_key);
        self.subsystems.sort_by(|a, b| a.id.cmp(&b.id));
        self.timestamping_services
            .sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Checks the validity window against `now`, allowing `skew` for a gateway clock behind the
    /// registry's.
    ///
    /// # Errors
    ///
    /// [`Error::ConfExpired`] when `now` is at or past expires-at; [`Error::ConfFromFuture`] when
    /// generated-at is more than `skew` after `now`.
    pub fn check_time(&self, now: SystemTime, skew: Duration) -> Result<(), Error> {
        let now = unix_seconds(now);
        if now >= self.expires_at {
            return Err(Error::ConfExpired {
                version: self.version,
                expired_at: self.expires_at,
                now,
            });
        }
        if self.generated_at > now.saturating_add(skew.as_secs()) {
            return Err(Error::ConfFromFuture {
                version: self.version,
                generated_at: self.generated_at,
                now,
            });
        }
        Ok(())
    }

    /// The gateway with this id.
    pub fn gateway(&self, id: &crate::id::GatewayId) -> Option<&Gateway> {
        self.gateways.iter().find(|g| &g.id == id)
    }

    /// Whether a certificate serial (lower-case hex) is revoked in this version.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked.iter().any(|r| r.serial == serial)
    }

    fn check_sorted(&self) -> Result<(), Error> {
        strictly_sorted("gateways", self.gateways.iter().map(|g| &g.id))?;
        strictly_sorted("global groups", self.global_groups.iter().map(|g| &g.id))?;
        for g in &self.global_groups {
            strictly_sorted("global group members", g.members.iter())?;
        }
        strictly_sorted(
            "member classes",
            self.member_classes.iter().map(|c| &c.code),
        )?;
        strictly_sorted("members", self.members.iter().map(|m| &m.id))?;
        strictly_sorted("revocations", self.revoked.iter().map(|r| &r.serial))?;
        strictly_sorted("services", self.services.iter().map(|s| &s.id))?;
        strictly_sorted(
            "signing certificates",
            self.signing_certificates.iter().map(signing_key),
        )?;
        strictly_sorted("subsystems", self.subsystems.iter().map(|s| &s.id))?;
        strictly_sorted(
            "timestamping services",
            self.timestamping_services.iter().map(|t| &t.name),
        )
    }
}

fn signing_key(c: &SigningCertificate) -> (crate::id::MemberId, String) {
    (c.member.clone(), c.certificate.serial())
}

fn strictly_sorted<T: Ord>(
    what: &'static str,
    mut items: impl Iterator<Item = T>,
) -> Result<(), Error> {
    let Some(mut previous) = items.next() else {
        return Ok(());
    };
    for item in items {
        if item <= previous {
            return Err(Error::decode(
                "global configuration",
                format!("{what} are not sorted or hold a duplicate"),
            ));
        }
        previous = item;
    }
    Ok(())
}

// === impl SignedConf ===

impl SignedConf {
    /// Encodes `conf` canonically and signs the bytes with the registry's key.
    ///
    /// # Errors
    ///
    /// [`Error::Hsm`] when the signer fails.
    pub fn sign(conf: &GlobalConf, signer: &dyn Signer) -> Result<Self, Error> {
        let document = conf.encode()?;
        let signature = signer.sign(&document)?;
        Ok(SignedConf {
            document,
            algorithm: signer.algorithm(),
            signature,
        })
    }

    /// Decodes an envelope. Checks the layout and the limits only; [`SignedConf::verify`] checks
    /// the signature and the document.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for a wrong magic or version, an unknown algorithm, a length over its
    /// limit or past the end of the bytes, or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(Error::decode(
                "signed global configuration",
                "does not start with \"BBGC\"",
            ));
        }
        let version = r.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(Error::decode(
                "signed global configuration",
                format!("envelope version {version} is not {ENVELOPE_VERSION}"),
            ));
        }
        let code = r.u8()?;
        let algorithm = SignatureAlgorithm::from_code(code).ok_or_else(|| {
            Error::decode(
                "signed global configuration",
                format!("unknown signature algorithm code {code}"),
            )
        })?;
        let document_len = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if document_len > MAX_CONF_LEN {
            return Err(Error::decode(
                "signed global configuration",
                format!("document of {document_len} bytes is over the limit of {MAX_CONF_LEN}"),
            ));
        }
        let document = r.take(document_len)?.to_vec();
        let signature_len = usize::from(r.u16()?);
        if signature_len > MAX_SIGNATURE_LEN {
            return Err(Error::decode(
                "signed global configuration",
                format!(
                    "signature of {signature_len} bytes is over the limit of {MAX_SIGNATURE_LEN}"
                ),
            ));
        }
        let signature = r.take(signature_len)?.to_vec();
        if !r.0.is_empty() {
            return Err(Error::decode(
                "signed global configuration",
                format!("{} trailing bytes", r.0.len()),
            ));
        }
        Ok(SignedConf {
            document,
            algorithm,
            signature,
        })
    }

    /// The envelope bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(MAGIC.len() + 8 + self.document.len() + self.signature.len());
        out.extend_from_slice(&MAGIC);
        out.push(ENVELOPE_VERSION);
        out.push(self.algorithm.code());
        // Both lengths were bounded when the envelope was built or decoded.
        out.extend_from_slice(
            &u32::try_from(self.document.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.document);
        out.extend_from_slice(
            &u16::try_from(self.signature.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.signature);
        out
    }

    /// Checks the signature under `key` and the instance, then decodes the document. Does not
    /// check the time: see [`GlobalConf::check_time`].
    ///
    /// # Errors
    ///
    /// [`Error::BadSignature`], [`Error::Decode`] or [`Error::WrongInstance`].
    pub fn verify(&self, key: &PublicKey, instance: &InstanceId) -> Result<GlobalConf, Error> {
        if key
            .verify(self.algorithm, &self.document, &self.signature)
            .is_err()
        {
            return Err(Error::BadSignature {
                instance: instance.to_string(),
                anchor_key: key.fingerprint(),
            });
        }
        let conf = parse_unverified(&self.document)?;
        if &conf.instance != instance {
            return Err(Error::WrongInstance {
                expected: instance.to_string(),
                got: conf.instance.to_string(),
            });
        }
        Ok(conf)
    }

    /// The signed document bytes.
    pub fn document(&self) -> &[u8] {
        &self.document
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// The detached signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// A cursor over untrusted bytes: every read checks what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.0.len() {
            return Err(Error::decode(
                "signed global configuration",
                format!("needs {n} more bytes, {} left", self.0.len()),
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes(
            b.try_into()
                .map_err(|_| Error::Unreachable("took two bytes"))?,
        ))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes(
            b.try_into()
                .map_err(|_| Error::Unreachable("took four bytes"))?,
        ))
    }
}
