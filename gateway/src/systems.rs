//! The information systems a gateway serves, and how each must connect to the client port: X-Road's
//! three connection types (PR-REST 4.7 and the X-Road security server user guide, "Client
//! information systems"), chosen per client (member or subsystem).
//!
//! ```text
//!  https          (the default, also for a client not listed) TLS with a client certificate
//!                 registered here for that client
//!  https-no-auth  TLS; a client certificate is not asked for (any is ignored)
//!  http           plain HTTP too, on the plain listener, which binds only a loopback address;
//!                 TLS works as well
//! ```
//!
//! A weaker connection is always allowed where a stronger one is required, never the reverse.
//! The decision is made per request, from the `X-Road-Client` header and the connection the
//! request arrived on, before anything else is done with it: a request that fails it gets a
//! `Client.SslAuthenticationFailed` fault and is not logged. The information systems are kept in
//! one JSON file ([`crate::store::JsonFile`]: durable before a change is answered, picked up by a
//! running gateway within a second), changed with `backbone gateway` verbs or the admin API.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use backbone_registry::id::ClientId;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::store::{JsonFile, StoreError};

/// Most certificates registered for one client: enough for a rollover across several hosts.
pub const MAX_CERTIFICATES: usize = 32;
/// Largest certificate accepted, DER bytes.
pub const MAX_CERTIFICATE_LEN: usize = 16 * 1024;

/// How a client must connect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connection {
    /// TLS with a registered client certificate.
    #[default]
    Https,
    /// TLS, any or no client certificate.
    HttpsNoAuth,
    /// Plain HTTP from a loopback address, or TLS.
    Http,
}

/// What is kept about one client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// How it must connect.
    #[serde(default)]
    pub connection: Connection,
    /// Its registered TLS client certificates, DER in standard base64.
    #[serde(default)]
    pub certificates: Vec<String>,
}

/// Every client with settings, by client id (`INSTANCE/CLASS/MEMBER[/SUBSYSTEM]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InformationSystems {
    /// The clients.
    #[serde(default)]
    pub clients: BTreeMap<String, System>,
}

/// One client as listed: its connection type and its certificates' fingerprints and subjects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// The client id.
    pub client: String,
    /// How it must connect.
    pub connection: Connection,
    /// Its certificates.
    pub certificates: Vec<CertificateInfo>,
}

/// A registered certificate as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// SHA-256 of the DER, lowercase hex: what `remove` takes.
    pub sha256: String,
    /// The subject, as x509-parser prints it.
    pub subject: String,
    /// The end of the validity period, RFC 2822.
    pub not_after: String,
}

/// The connection a request arrived on.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The remote address.
    pub remote: SocketAddr,
    /// Whether it is TLS.
    pub tls: bool,
    /// The client certificate the TLS handshake proved, DER.
    pub certificate: Option<Arc<Vec<u8>>>,
}

/// Why a change is refused.
#[derive(Debug, thiserror::Error)]
pub enum SystemsError {
    /// Not a certificate, too large, or too many.
    #[error("{0}")]
    Invalid(String),
    /// The file cannot be written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stored information systems.
#[derive(Debug)]
pub struct SystemsStore(JsonFile<InformationSystems>);

// === impl Connection ===

impl Connection {
    /// The name used in files, flags and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Connection::Https => "https",
            Connection::HttpsNoAuth => "https-no-auth",
            Connection::Http => "http",
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Connection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "https" => Ok(Connection::Https),
            "https-no-auth" => Ok(Connection::HttpsNoAuth),
            "http" => Ok(Connection::Http),
            other => Err(format!(
                "connection type {other:?}: one of https, https-no-auth, http"
            )),
        }
    }
}

// === impl InformationSystems ===

impl InformationSystems {
    /// Whether a request naming `client` as `X-Road-Client` may be served on `caller`'s
    /// connection; the reason when not (it names the client and the rule, never a registered
    /// certificate).
    pub fn authenticate(&self, client: &ClientId, caller: &Caller) -> Result<(), String> {
        let system = self.clients.get(&client.to_string());
        let connection = system.map_or(Connection::Https, |s| s.connection);
        if !caller.tls {
            // The plain listener binds only loopback addresses; the address is checked again so
            // that no other way in can make a plain connection count.
            return if connection == Connection::Http && caller.remote.ip().is_loopback() {
                Ok(())
            } else if connection == Connection::Http {
                Err(format!(
                    "{client} may use plain HTTP only from a loopback address, not {}",
                    caller.remote.ip()
                ))
            } else {
                Err(format!(
                    "{client} must connect over HTTPS ({connection}); this connection is plain HTTP"
                ))
            };
        }
        if connection != Connection::Https {
            return Ok(());
        }
        let Some(presented) = &caller.certificate else {
            return Err(format!(
                "{client} must present a TLS client certificate registered for it on this gateway; none was presented"
            ));
        };
        let presented = base64::engine::general_purpose::STANDARD.encode(presented.as_slice());
        if system.is_some_and(|s| s.certificates.iter().any(|c| c == &presented)) {
            Ok(())
        } else {
            Err(format!(
                "the TLS client certificate presented is not registered for {client} on this gateway"
            ))
        }
    }

    /// Every client with settings.
    pub fn list(&self) -> Vec<Listed> {
        self.clients
            .iter()
            .map(|(client, system)| Listed {
                client: client.clone(),
                connection: system.connection,
                certificates: system
                    .certificates
                    .iter()
                    .map(|b64| {
                        let der = base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap_or_default();
                        info(&der)
                    })
                    .collect(),
            })
            .collect()
    }
}

/// A certificate's fingerprint, subject and end of validity.
pub fn info(der: &[u8]) -> CertificateInfo {
    let parsed = x509_parser::parse_x509_certificate(der).ok();
    CertificateInfo {
        sha256: crate::usage::hex(&Sha256::digest(der)),
        subject: parsed.as_ref().map_or_else(
            || "(unreadable)".to_owned(),
            |(_, c)| c.subject().to_string(),
        ),
        not_after: parsed.as_ref().map_or_else(String::new, |(_, c)| {
            c.validity()
                .not_after
                .to_rfc2822()
                .unwrap_or_else(|e| e.clone())
        }),
    }
}

// === impl SystemsStore ===

impl SystemsStore {
    /// Opens the file at `path`; a missing file is no settings: every client must connect
    /// with a registered certificate, and none is registered.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the file exists but cannot be read or parsed.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        JsonFile::open("information systems", path).map(SystemsStore)
    }

    /// Reads the file again if another process changed it; `true` if what is in force changed.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the changed file cannot be read or parsed; what is in force stays.
    pub fn reload_if_changed(&self) -> Result<bool, StoreError> {
        self.0.reload_if_changed()
    }

    /// What is in force.
    pub fn snapshot(&self) -> Arc<InformationSystems> {
        self.0.snapshot()
    }

    /// Registers `der` as a TLS client certificate of `client`, durably; `false` if it was
    /// registered already.
    ///
    /// # Errors
    ///
    /// [`SystemsError::Invalid`] for what is not a certificate, is over
    /// [`MAX_CERTIFICATE_LEN`], or would be the client's certificate number
    /// [`MAX_CERTIFICATES`] + 1; [`SystemsError::Store`] when it cannot be written.
    pub fn add_certificate(&self, client: &ClientId, der: &[u8]) -> Result<bool, SystemsError> {
        if der.len() > MAX_CERTIFICATE_LEN {
            return Err(SystemsError::Invalid(format!(
                "a certificate of {} bytes is over the limit of {MAX_CERTIFICATE_LEN}",
                der.len()
            )));
        }
        match x509_parser::parse_x509_certificate(der) {
            Ok(([], _)) => {}
            _ => {
                return Err(SystemsError::Invalid(
                    "not an X.509 certificate (DER)".into(),
                ));
            }
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(der);
        let snapshot = self.snapshot();
        let existing = snapshot.clients.get(&client.to_string());
        if existing.is_some_and(|s| s.certificates.contains(&encoded)) {
            return Ok(false);
        }
        if existing.is_some_and(|s| s.certificates.len() >= MAX_CERTIFICATES) {
            return Err(SystemsError::Invalid(format!(
                "{client} has {MAX_CERTIFICATES} certificates already: remove one first"
            )));
        }
        Ok(self.0.change(|systems| {
            let system = systems.clients.entry(client.to_string()).or_default();
            if system.certificates.contains(&encoded) {
                return false;
            }
            system.certificates.push(encoded);
            true
        })?)
    }

    /// Removes the certificate of `client` whose SHA-256 (hex, as listed) is `sha256`, durably;
    /// `false` if there is none.
    ///
    /// # Errors
    ///
    /// [`SystemsError::Store`] when it cannot be written.
    pub fn remove_certificate(
        &self,
        client: &ClientId,
        sha256: &str,
    ) -> Result<bool, SystemsError> {
        let wanted = sha256.to_ascii_lowercase();
        Ok(self.0.change(|systems| {
            let Some(system) = systems.clients.get_mut(&client.to_string()) else {
                return false;
            };
            let before = system.certificates.len();
            system.certificates.retain(|b64| {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap_or_default();
                crate::usage::hex(&Sha256::digest(&der)) != wanted
            });
            let changed = system.certificates.len() != before;
            if system.certificates.is_empty() && system.connection == Connection::Https {
                systems.clients.remove(&client.to_string());
            }
            changed
        })?)
    }

    /// Sets how `client` must connect, durably; `false` if it was so already.
    ///
    /// # Errors
    ///
    /// [`SystemsError::Store`] when it cannot be written.
    pub fn set_connection(
        &self,
        client: &ClientId,
        connection: Connection,
    ) -> Result<bool, SystemsError> {
        Ok(self.0.change(|systems| {
            let key = client.to_string();
            let system = systems.clients.entry(key.clone()).or_default();
            if system.connection == connection {
                if system.certificates.is_empty() && connection == Connection::Https {
                    systems.clients.remove(&key);
                }
                return false;
            }
            system.connection = connection;
            if system.certificates.is_empty() && connection == Connection::Https {
                systems.clients.remove(&key);
            }
            true
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn caller(tls: bool, remote: &str, certificate: Option<&[u8]>) -> Caller {
        Caller {
            remote: remote.parse().unwrap(),
            tls,
            certificate: certificate.map(|c| Arc::new(c.to_vec())),
        }
    }

    #[test]
    fn each_connection_type_admits_what_x_road_admits_and_nothing_weaker() {
        let dir = tempfile::tempdir().unwrap();
        let store = SystemsStore::open(dir.path().join("information-systems.json")).unwrap();
        let ehr: ClientId = "EE/GOV/70000001/ehr".parse().unwrap();
        let lab: ClientId = "EE/GOV/70000001/lab".parse().unwrap();
        let (ehr_cert, lab_cert) = (certificate("ehr"), certificate("lab"));
        assert!(store.add_certificate(&ehr, &ehr_cert).unwrap());
        assert!(!store.add_certificate(&ehr, &ehr_cert).unwrap());
        assert!(store.add_certificate(&lab, &lab_cert).unwrap());
        let systems = store.snapshot();
        let local = "127.0.0.1:5000";

        // https, the default: only a certificate registered for that very client.
        assert!(
            systems
                .authenticate(&ehr, &caller(true, local, Some(&ehr_cert)))
                .is_ok()
        );
        let impersonated = systems
            .authenticate(&ehr, &caller(true, local, Some(&lab_cert)))
            .unwrap_err();
        assert!(
            impersonated.contains("not registered for EE/GOV/70000001/ehr"),
            "{impersonated}"
        );
        assert!(
            systems
                .authenticate(&ehr, &caller(true, local, None))
                .is_err()
        );
        assert!(
            systems
                .authenticate(&ehr, &caller(false, local, None))
                .is_err()
        );
        let unlisted: ClientId = "EE/GOV/70000001/other".parse().unwrap();
        assert!(
            systems
                .authenticate(&unlisted, &caller(true, local, Some(&ehr_cert)))
                .is_err()
        );

        // https-no-auth: TLS, with or without a certificate; never plain.
        assert!(store.set_connection(&ehr, Connection::HttpsNoAuth).unwrap());
        let systems = store.snapshot();
        assert!(
            systems
                .authenticate(&ehr, &caller(true, local, None))
                .is_ok()
        );
        assert!(
            systems
                .authenticate(&ehr, &caller(false, local, None))
                .is_err()
        );

        // http: plain from loopback only.
        assert!(store.set_connection(&ehr, Connection::Http).unwrap());
        let systems = store.snapshot();
        assert!(
            systems
                .authenticate(&ehr, &caller(false, local, None))
                .is_ok()
        );
        assert!(
            systems
                .authenticate(&ehr, &caller(false, "10.0.0.7:5000", None))
                .is_err()
        );
        assert!(
            systems
                .authenticate(&ehr, &caller(true, "10.0.0.7:5000", None))
                .is_ok()
        );

        // Durable, and a removal by fingerprint takes the certificate away.
        let reopened = SystemsStore::open(store.0.path()).unwrap();
        assert_eq!(reopened.snapshot().list().len(), 2);
        let listed = reopened.snapshot().list();
        let lab_listed = listed.iter().find(|l| l.client == lab.to_string()).unwrap();
        assert_eq!(lab_listed.connection, Connection::Https);
        let fingerprint = lab_listed.certificates[0].sha256.clone();
        assert!(reopened.remove_certificate(&lab, &fingerprint).unwrap());
        assert!(!reopened.remove_certificate(&lab, &fingerprint).unwrap());
        assert!(store.reload_if_changed().unwrap());
        assert!(
            store
                .snapshot()
                .authenticate(&lab, &caller(true, local, Some(&lab_cert)))
                .is_err()
        );

        // Not a certificate.
        assert!(matches!(
            store.add_certificate(&lab, b"not a certificate"),
            Err(SystemsError::Invalid(_))
        ));
    }
}
