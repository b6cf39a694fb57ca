//! The RFC 3161 time-stamping authority: requests in, time-stamp tokens (CMS SignedData over a
//! `TSTInfo`, with the RFC 5816 ESSCertIDv2 attribute) out, signed through the HSM.
//!
//! Spec: RFC 3161 (§2.4.1 request, §2.4.2 response and TSTInfo, §3.4 over HTTP), RFC 5816
//! (ESSCertIDv2), RFC 5652 (the SignedData, `cms.rs`).
//!
//! ```text
//!  POST /tsa (application/timestamp-query)
//!     ─▶ request::parse ── refused ─▶ TimeStampResp { rejection, failInfo }
//!     ─▶ Authority::issue: serial, genTime, TSTInfo ─▶ CmsSigner (hsm) ─▶ token
//!     ─▶ SHA-256(token) into the keyless calendar (service::Handle::sign), signature stored by
//!        serial (store.rs) ─▶ TimeStampResp { granted, token } (application/timestamp-reply)
//! ```
//!
//! Stages: a token is *signed* in memory; it is *answered* only once its hash has a keyless
//! signature whose calendar leaf is durable and that signature is stored, so every token a client
//! holds is provable from the publications even if the TSA key is later compromised. A crash
//! before the answer loses the token, which nobody received.
//!
//! Serial numbers are `epoch << 64 | counter`: the epoch is fixed when the service starts, after
//! the calendar head (see [`Serials::new`]), and the counter counts from zero. Every answered
//! token's second is in the calendar, so a restarted service starts past every epoch used for an
//! answered token: serials are never reused across restarts, without a write per token.

use std::sync::atomic::{AtomicU64, Ordering};

use openssl::sha::sha256;
use yasna::models::ObjectIdentifier;
use yasna::{ASN1Error, ASN1ErrorKind, BERReader, Tag};

use crate::cms::{self, CmsSigner, Content};
use crate::error::Error;

pub mod request;
pub mod store;

pub use request::{FailureInfo, RequestError, TimeStampReq};

/// The policy OID unless configured: OpenSSL's example TSA policy (`tsa_policy1`). A real
/// deployment sets its own (`--tsa-policy`).
pub const DEFAULT_POLICY: &str = "1.2.3.4.1";
/// The accuracy claimed unless configured: one second, the calendar's own resolution, which an
/// NTP-synchronised host is well within.
pub const DEFAULT_ACCURACY_MILLIS: u32 = 1000;
/// The largest token a reply may carry that [`token_of_reply`] reads.
pub const MAX_REPLY: usize = 64 * 1024;

/// `PKIStatus` granted.
const STATUS_GRANTED: u8 = 0;
/// `PKIStatus` rejection.
const STATUS_REJECTION: u8 = 2;

/// The TSA's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The TSA policy every token names.
    pub policy: ObjectIdentifier,
    /// The accuracy claimed, in milliseconds (at least 1).
    pub accuracy_millis: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: ObjectIdentifier::from_slice(&[1, 2, 3, 4, 1]),
            accuracy_millis: DEFAULT_ACCURACY_MILLIS,
        }
    }
}

/// Serial numbers unique across restarts: a start epoch and a counter.
#[derive(Debug)]
pub struct Serials {
    epoch: u64,
    counter: AtomicU64,
}

/// A serial number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial(pub u128);

/// A token ready to answer: its serial number and its DER (a ContentInfo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The serial number in its TSTInfo.
    pub serial: Serial,
    /// The TimeStampToken.
    pub der: Vec<u8>,
}

/// Issues tokens with one key.
#[derive(Debug)]
pub struct Authority {
    cms: CmsSigner,
    config: Config,
    serials: Serials,
    /// The TSA's name as a GeneralName (directoryName of its certificate's subject).
    name: Vec<u8>,
}

// === impl Authority ===

impl Authority {
    /// An authority signing with `cms`, whose certificate MUST carry the critical
    /// id-kp-timeStamping extended key usage (RFC 3161 §2.3).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an accuracy of zero or a certificate without the usage.
    pub fn new(cms: CmsSigner, config: Config, serials: Serials) -> Result<Self, Error> {
        if config.accuracy_millis == 0 {
            return Err(Error::Config {
                key: "tsa accuracy",
                value: "0".to_owned(),
                reason: "must be at least 1 ms".to_owned(),
            });
        }
        let (_, certificate) =
            x509_parser::parse_x509_certificate(cms.certificate()).map_err(|e| Error::Config {
                key: "tsa certificate",
                value: cms.signer().label().to_owned(),
                reason: format!("does not parse: {e}"),
            })?;
        let time_stamping = certificate
            .extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|eku| eku.critical && eku.value.time_stamping);
        if !time_stamping {
            return Err(Error::Config {
                key: "tsa certificate",
                value: cms.signer().label().to_owned(),
                reason: "lacks the critical id-kp-timeStamping extended key usage".to_owned(),
            });
        }
        let subject = certificate.subject().as_raw().to_vec();
        let name =
            yasna::construct_der(|w| w.write_tagged(Tag::context(4), |w| w.write_der(&subject)));
        Ok(Authority {
            cms,
            config,
            serials,
            name,
        })
    }

    /// The TSA's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The TSA certificate, DER.
    pub fn certificate(&self) -> &[u8] {
        self.cms.certificate()
    }

    /// Parses `body` and issues its token at `secs`.`millis` (the clock is read by the
    /// caller): `Ok(token)` to be answered with [`granted`], or the reply to send as is.
    ///
    /// # Errors
    ///
    /// A rejection reply (DER) for a refused request, or for a signing failure
    /// (`systemFailure`; the cause is logged).
    pub fn respond(&self, body: &[u8], secs: u64, millis: u32) -> Result<Token, Vec<u8>> {
        let request = match request::parse(body, &self.config.policy) {
            Ok(request) => request,
            Err(e) => {
                tracing::debug!(error = %e, "time-stamp request refused");
                return Err(rejection(e.fail_info(), &e.to_string()));
            }
        };
        self.issue(&request, secs, millis).map_err(|e| {
            tracing::error!(error = %e, "cannot issue a time-stamp token");
            rejection(
                FailureInfo::SystemFailure,
                "the time-stamp token cannot be signed",
            )
        })
    }

    /// Issues the token for an accepted request.
    ///
    /// # Errors
    ///
    /// [`Error::Hsm`] if signing fails; [`Error::Unreachable`] for a time past year 9999.
    pub fn issue(&self, request: &TimeStampReq, secs: u64, millis: u32) -> Result<Token, Error> {
        let serial = self.serials.next();
        let tst_info = self.tst_info(request, serial, secs, millis)?;
        let options = cms::Options {
            include_certificates: request.cert_req,
            signing_time: Some(secs),
            signing_certificate_v2: true,
        };
        let der = self.cms.sign(
            Content {
                content_type: cms::OID_TST_INFO,
                bytes: &tst_info,
                detached: false,
            },
            &options,
        )?;
        Ok(Token { serial, der })
    }

    /// `TSTInfo ::= SEQUENCE { version 1, policy, messageImprint, serialNumber, genTime,
    /// accuracy, nonce?, tsa [0] }` (ordering is the DEFAULT false, so left out).
    fn tst_info(
        &self,
        request: &TimeStampReq,
        serial: Serial,
        secs: u64,
        millis: u32,
    ) -> Result<Vec<u8>, Error> {
        let gen_time = cms::generalized_time_der(secs, millis)?;
        let accuracy = self.config.accuracy_millis;
        Ok(yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_u8(1);
                w.next().write_oid(&self.config.policy);
                w.next().write_der(&request.message_imprint_der);
                w.next().write_bigint_bytes(&serial.0.to_be_bytes(), true);
                w.next().write_der(&gen_time);
                w.next().write_sequence(|w| {
                    if accuracy >= 1000 {
                        w.next().write_u32(accuracy / 1000);
                    }
                    if !accuracy.is_multiple_of(1000) {
                        w.next().write_tagged_implicit(Tag::context(0), |w| {
                            w.write_u32(accuracy % 1000)
                        });
                    }
                });
                if let Some(nonce) = &request.nonce_der {
                    w.next().write_der(nonce);
                }
                w.next()
                    .write_tagged(Tag::context(0), |w| w.write_der(&self.name));
            });
        }))
    }
}

// === impl Serials ===

impl Serials {
    /// Serials for a run that starts at `epoch`. Callers MUST pass a second after every epoch an
    /// earlier run used for an answered token: `max(now, calendar head + 1)` is, since a token
    /// is answered only after a calendar leaf at or after its issue time.
    pub fn new(epoch: u64) -> Self {
        Serials {
            epoch,
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> Serial {
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        Serial((u128::from(self.epoch) << 64) | u128::from(count))
    }
}

// === impl Serial ===

impl Serial {
    /// Parses hex (as `openssl ts -reply -text` prints it, `0x` prefix optional).
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        if text.is_empty() || text.len() > 32 {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(Serial)
    }
}

impl std::fmt::Display for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// `TimeStampResp { status granted, timeStampToken }`.
pub fn granted(token: &[u8]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next()
                .write_sequence(|w| w.next().write_u8(STATUS_GRANTED));
            w.next().write_der(token);
        });
    })
}

/// `TimeStampResp { status rejection, statusString, failInfo }` with no token.
pub fn rejection(fail: FailureInfo, text: &str) -> Vec<u8> {
    let bit = fail as usize;
    let mut bits = vec![0u8; bit / 8 + 1];
    if let Some(byte) = bits.get_mut(bit / 8) {
        *byte = 0x80 >> (bit % 8);
    }
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_u8(STATUS_REJECTION);
                w.next()
                    .write_sequence(|w| w.next().write_utf8_string(text));
                w.next().write_bitvec_bytes(&bits, bit + 1);
            });
        });
    })
}

/// The token in a TimeStampResp, or the input itself when it is already a token.
///
/// # Errors
///
/// [`RequestError::Malformed`] when the bytes are neither, or the reply carries no token.
pub fn token_of_reply(bytes: &[u8]) -> Result<Vec<u8>, RequestError> {
    if bytes.len() > MAX_REPLY {
        return Err(RequestError::TooLarge {
            len: bytes.len(),
            max: MAX_REPLY,
        });
    }
    if serial_of_token(bytes).is_ok() {
        return Ok(bytes.to_vec());
    }
    let malformed = |e: ASN1Error| RequestError::Malformed(e.to_string());
    let token = yasna::parse_der(bytes, |r| {
        r.read_sequence(|r| {
            r.next().read_der()?;
            r.read_optional(|r| r.read_der())
        })
    })
    .map_err(malformed)?;
    token.ok_or_else(|| {
        RequestError::Malformed("the reply carries no token (not granted)".to_owned())
    })
}

/// The serial number in a token's TSTInfo. Reads the structure only: it checks no signature.
///
/// # Errors
///
/// [`RequestError::Malformed`] when the bytes are not a time-stamp token.
pub fn serial_of_token(token: &[u8]) -> Result<Serial, RequestError> {
    let malformed = |e: ASN1Error| RequestError::Malformed(e.to_string());
    let tst_info = yasna::parse_der(token, |r| {
        r.read_sequence(|r| {
            r.next().read_oid()?;
            r.next().read_tagged(Tag::context(0), |r| {
                r.read_sequence(|r| {
                    r.next().read_der()?;
                    r.next().read_der()?;
                    let content = r.next().read_sequence(|r| {
                        let content_type = r.next().read_oid()?;
                        if content_type.components().as_slice() != cms::OID_TST_INFO {
                            return Err(ASN1Error::new(ASN1ErrorKind::Invalid));
                        }
                        r.next().read_tagged(Tag::context(0), |r| r.read_bytes())
                    })?;
                    rest(r)?;
                    Ok(content)
                })
            })
        })
    })
    .map_err(malformed)?;
    let serial = yasna::parse_der(&tst_info, |r| {
        r.read_sequence(|r| {
            r.next().read_der()?;
            r.next().read_oid()?;
            r.next().read_der()?;
            let (serial, positive) = r.next().read_bigint_bytes()?;
            rest(r)?;
            Ok((serial, positive))
        })
    })
    .map_err(malformed)?;
    match serial {
        (bytes, true) => {
            let bytes = bytes.strip_prefix(&[0]).unwrap_or(&bytes);
            let mut value: u128 = 0;
            if bytes.len() > 16 {
                return Err(RequestError::Malformed(format!(
                    "serial number of {} bytes",
                    bytes.len()
                )));
            }
            for b in bytes {
                value = (value << 8) | u128::from(*b);
            }
            Ok(Serial(value))
        }
        (_, false) => Err(RequestError::Malformed("negative serial number".to_owned())),
    }
}

/// The SHA-256 of a token: the hash the keyless calendar signs for it.
pub fn token_hash(token: &[u8]) -> [u8; 32] {
    sha256(token)
}

/// Skips the remaining elements of a sequence.
fn rest(r: &mut yasna::BERReaderSeq<'_, '_>) -> Result<(), ASN1Error> {
    while r
        .read_optional(|r: BERReader<'_, '_>| r.read_der())?
        .is_some()
    {}
    Ok(())
}

/// Entry points of the fuzz targets in `timestamping/fuzz`: one call each, results dropped.
#[doc(hidden)]
pub mod fuzzing {
    /// `timestamp_req`: the request parser, as `POST /tsa` runs it.
    pub fn timestamp_req(data: &[u8]) {
        let _ = super::request::parse(data, &super::Config::default().policy);
    }

    /// `timestamp_reply`: reading a reply or token, as `backbone ksi tsa-proof` does.
    pub fn timestamp_reply(data: &[u8]) {
        if let Ok(token) = super::token_of_reply(data) {
            let _ = super::serial_of_token(&token);
        }
    }
}

#[cfg(test)]
mod tests;
