//! TLS 1.3 with keys that never leave the key store, and peers pinned to registered certificates.
//!
//! ```text
//!  Signer (PKCS#11 or software) ─▶ StoreSigningKey (rustls SigningKey) ─▶ CertifiedKey
//!  Pins (the caller's registered certificates) ─▶ PinnedClientVerifier / PinnedServerVerifier
//!  ─▶ server_config / client_config (TLS 1.3 only, ring provider)
//! ```
//!
//! Backbone does not use hostname PKI between its parts: a gateway accepts exactly the TLS
//! certificate the global configuration registers for its peer, the registry accepts exactly the
//! administrators' certificates it issued. A verifier therefore asks a [`Pins`] whether the peer's
//! certificate (its exact DER) is registered, checks the certificate's validity period, and lets
//! rustls check the handshake signature (proof that the peer holds the key). Chains are not
//! built: a pinned certificate needs none.
//!
//! rustls' own verifiers (webpki) check chains and names, which is not this trust model; the
//! verifier here is small and uses rustls' signature checks, so only the pin lookup is ours.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::{SignatureAlgorithm, Signer};

/// ALPN protocols offered by servers and clients built here, HTTP/2 first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Which peer certificates are registered. Implementations answer from the current global
/// configuration or the registry's records, so a revocation takes effect on the next handshake.
pub trait Pins: Send + Sync + fmt::Debug {
    /// Whether `certificate` (DER, exactly as the peer sent it) is registered and not revoked.
    fn is_pinned(&self, certificate: &[u8]) -> bool;
}

/// Every certificate: what [`server_config_any_client`] admits at the TLS layer, leaving the
/// decision to the application.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyCertificate;

/// A fixed set of certificates, e.g. the one registry admin certificate a CLI trusts.
#[derive(Clone, Debug, Default)]
pub struct PinSet(Vec<Vec<u8>>);

/// rustls' `SigningKey` over a key store [`Signer`]: every handshake signature is made by the
/// store (the HSM), the private key is never in this process.
#[derive(Clone)]
pub struct StoreSigningKey {
    signer: Arc<dyn Signer>,
    scheme: SignatureScheme,
}

struct StoreTlsSigner {
    signer: Arc<dyn Signer>,
    scheme: SignatureScheme,
}

/// Accepts a client only with a pinned, currently valid certificate and a valid handshake
/// signature; clients without a certificate are refused unless the verifier was made
/// [`PinnedClientVerifier::optional`].
#[derive(Debug)]
pub struct PinnedClientVerifier {
    pins: Arc<dyn Pins>,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Accepts a server only with a pinned, currently valid certificate; the server name is not
/// checked (the pin identifies the server).
#[derive(Debug)]
pub struct PinnedServerVerifier {
    pins: Arc<dyn Pins>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Errors building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The key's algorithm cannot sign TLS 1.3 handshakes (RSA PKCS#1 v1.5: use PSS).
    #[error("a {0:?} key cannot sign TLS 1.3 handshakes; use ECDSA P-256, Ed25519 or RSA-PSS")]
    UnsupportedAlgorithm(SignatureAlgorithm),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The provider every configuration here uses: ring, TLS 1.3 cipher suites only.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration: TLS 1.3 only, `certificate_chain` (leaf first, DER) with its key in
/// the store, clients required to present a pinned certificate.
///
/// # Errors
///
/// [`TlsError::UnsupportedAlgorithm`] for a key TLS 1.3 cannot use.
pub fn server_config(
    signer: Arc<dyn Signer>,
    certificate_chain: Vec<Vec<u8>>,
    clients: Arc<dyn Pins>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = PinnedClientVerifier::new(clients, &provider);
    server_config_with(provider, signer, certificate_chain, verifier)
}

/// A server configuration like [`server_config`], but a client may present no certificate or
/// any currently valid certificate (with a valid handshake signature, which proves it holds the
/// key): for a listener that decides per request which certificate speaks for whom, as the
/// gateway's client port does for information systems.
///
/// # Errors
///
/// [`TlsError::UnsupportedAlgorithm`] for a key TLS 1.3 cannot use.
pub fn server_config_any_client(
    signer: Arc<dyn Signer>,
    certificate_chain: Vec<Vec<u8>>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = PinnedClientVerifier::new(Arc::new(AnyCertificate), &provider).optional();
    server_config_with(provider, signer, certificate_chain, verifier)
}

/// TLS 1.3 only, `certificate_chain` with its key in the store, clients checked by `verifier`.
fn server_config_with(
    provider: Arc<CryptoProvider>,
    signer: Arc<dyn Signer>,
    certificate_chain: Vec<Vec<u8>>,
    verifier: PinnedClientVerifier,
) -> Result<rustls::ServerConfig, TlsError> {
    let key = certified_key(signer, certificate_chain)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client configuration: TLS 1.3 only, authenticating with `certificate_chain` and its key in
/// the store, accepting only a pinned server certificate.
///
/// # Errors
///
/// [`TlsError::UnsupportedAlgorithm`] for a key TLS 1.3 cannot use.
pub fn client_config(
    signer: Arc<dyn Signer>,
    certificate_chain: Vec<Vec<u8>>,
    servers: Arc<dyn Pins>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let key = certified_key(signer, certificate_chain)?;
    let verifier = Arc::new(PinnedServerVerifier::new(servers, &provider));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client configuration for a server that has a certificate from a CA rather than one pinned in
/// the global configuration (a gateway's local service): TLS 1.3 only, the server verified
/// against `roots` (its name included), and `certificate_chain` with its key in the store
/// presented when the server asks for a client certificate.
///
/// # Errors
///
/// [`TlsError::UnsupportedAlgorithm`] for a key TLS 1.3 cannot use; [`TlsError::Rustls`] for
/// roots rustls cannot use.
pub fn ca_client_config(
    signer: Arc<dyn Signer>,
    certificate_chain: Vec<Vec<u8>>,
    roots: rustls::RootCertStore,
) -> Result<rustls::ClientConfig, TlsError> {
    let key = certified_key(signer, certificate_chain)?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    Ok(config)
}

/// The rustls certified key for a store key and its certificate chain.
///
/// # Errors
///
/// [`TlsError::UnsupportedAlgorithm`] for a key TLS 1.3 cannot use.
pub fn certified_key(
    signer: Arc<dyn Signer>,
    certificate_chain: Vec<Vec<u8>>,
) -> Result<CertifiedKey, TlsError> {
    let key = StoreSigningKey::new(signer)?;
    let chain = certificate_chain
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    Ok(CertifiedKey::new(chain, Arc::new(key)))
}

/// The TLS 1.3 signature scheme of a store algorithm.
fn scheme(algorithm: SignatureAlgorithm) -> Option<SignatureScheme> {
    match algorithm {
        SignatureAlgorithm::EcdsaP256Sha256 => Some(SignatureScheme::ECDSA_NISTP256_SHA256),
        SignatureAlgorithm::Ed25519 => Some(SignatureScheme::ED25519),
        SignatureAlgorithm::RsaPssSha256 => Some(SignatureScheme::RSA_PSS_SHA256),
        SignatureAlgorithm::RsaPkcs1Sha256 => None,
    }
}

/// Whether the certificate's validity period contains `now`; an unparsable certificate is not.
fn valid_at(certificate: &[u8], now: UnixTime) -> Result<(), rustls::Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = parsed.validity();
    if seconds < validity.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if seconds > validity.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not accepted".to_owned())
}

fn check_pinned(pins: &dyn Pins, certificate: &[u8], now: UnixTime) -> Result<(), rustls::Error> {
    if !pins.is_pinned(certificate) {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ));
    }
    valid_at(certificate, now)
}

// === impl PinSet ===

impl PinSet {
    /// The set of these DER certificates.
    pub fn new(certificates: impl IntoIterator<Item = Vec<u8>>) -> Self {
        PinSet(certificates.into_iter().collect())
    }
}

impl Pins for PinSet {
    fn is_pinned(&self, certificate: &[u8]) -> bool {
        self.0.iter().any(|c| c.as_slice() == certificate)
    }
}

impl Pins for AnyCertificate {
    fn is_pinned(&self, _certificate: &[u8]) -> bool {
        true
    }
}

// === impl StoreSigningKey ===

impl StoreSigningKey {
    /// Wraps a store signer.
    ///
    /// # Errors
    ///
    /// [`TlsError::UnsupportedAlgorithm`] for RSA PKCS#1 v1.5, which TLS 1.3 forbids in handshakes.
    pub fn new(signer: Arc<dyn Signer>) -> Result<Self, TlsError> {
        let algorithm = signer.algorithm();
        let scheme = scheme(algorithm).ok_or(TlsError::UnsupportedAlgorithm(algorithm))?;
        Ok(StoreSigningKey { signer, scheme })
    }
}

impl fmt::Debug for StoreSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSigningKey")
            .field("label", &self.signer.label())
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl rustls::sign::SigningKey for StoreSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered.contains(&self.scheme).then(|| {
            Box::new(StoreTlsSigner {
                signer: self.signer.clone(),
                scheme: self.scheme,
            }) as Box<dyn rustls::sign::Signer>
        })
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        match self.scheme {
            SignatureScheme::ED25519 => rustls::SignatureAlgorithm::ED25519,
            SignatureScheme::RSA_PSS_SHA256 => rustls::SignatureAlgorithm::RSA,
            _ => rustls::SignatureAlgorithm::ECDSA,
        }
    }
}

// === impl StoreTlsSigner ===

impl fmt::Debug for StoreTlsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreTlsSigner")
            .field("label", &self.signer.label())
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl rustls::sign::Signer for StoreTlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // The store hashes as the algorithm requires and returns the TLS encoding (DER ECDSA).
        self.signer
            .sign(message)
            .map_err(|e| rustls::Error::General(format!("key store signature failed: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

// === impl PinnedClientVerifier ===

impl PinnedClientVerifier {
    /// A verifier over `pins`, with `provider`'s signature algorithms.
    pub fn new(pins: Arc<dyn Pins>, provider: &CryptoProvider) -> Self {
        PinnedClientVerifier {
            pins,
            mandatory: true,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The same verifier, also admitting clients that present no certificate: the application
    /// decides per request what an unauthenticated or a certificate-bearing client may do.
    pub fn optional(mut self) -> Self {
        self.mandatory = false;
        self
    }
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_pinned(self.pins.as_ref(), end_entity.as_ref(), now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is configured; a TLS 1.2 handshake never reaches this.
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// === impl PinnedServerVerifier ===

impl PinnedServerVerifier {
    /// A verifier over `pins`, with `provider`'s signature algorithms.
    pub fn new(pins: Arc<dyn Pins>, provider: &CryptoProvider) -> Self {
        PinnedServerVerifier {
            pins,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_pinned(self.pins.as_ref(), end_entity.as_ref(), now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
