//! Certificate request intake: the size limit, PEM or DER, the PKCS#10 self-signature (RFC 2986)
//! and the key types the registry certifies. Pure code.

use backbone_hsm::cert::{MAX_CERT_LEN, VerifiedCsr, verify_csr};
use base64::Engine as _;

use crate::Error;

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE REQUEST-----";
const PEM_END: &str = "-----END CERTIFICATE REQUEST-----";

/// Checks a certificate request, PEM or DER, and returns the key it certifies.
///
/// The subject the requester asked for is returned but not trusted: the registry writes the
/// subject of what it issues from its own records.
///
/// # Errors
///
/// [`Error::Csr`] for a request over [`MAX_CERT_LEN`], not PKCS#10, or whose self-signature does
/// not verify; [`Error::Decode`] for broken PEM.
pub fn intake(bytes: &[u8]) -> Result<VerifiedCsr, Error> {
    // PEM is at most 4/3 of the DER plus line breaks and armour.
    if bytes.len() > MAX_CERT_LEN * 2 {
        return Err(Error::decode(
            "certificate request",
            format!(
                "{} bytes is over the limit of {}",
                bytes.len(),
                MAX_CERT_LEN * 2
            ),
        ));
    }
    let der = if bytes.starts_with(PEM_BEGIN.as_bytes()) {
        from_pem(bytes)?
    } else {
        bytes.to_vec()
    };
    verify_csr(&der).map_err(Error::Csr)
}

fn from_pem(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::decode("certificate request", "PEM is not UTF-8"))?;
    let body = text
        .trim_end()
        .strip_prefix(PEM_BEGIN)
        .and_then(|t| t.strip_suffix(PEM_END))
        .ok_or_else(|| {
            Error::decode(
                "certificate request",
                "PEM armour is not one CERTIFICATE REQUEST block",
            )
        })?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| Error::decode("certificate request", e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use backbone_hsm::cert::{Subject, csr_der, csr_pem};
    use backbone_hsm::software::{SoftwareSigner, generate_pkcs8};

    #[test]
    fn der_and_pem_give_the_same_key() {
        let key = SoftwareSigner::from_pkcs8(
            "k",
            &generate_pkcs8(backbone_hsm::KeyType::Ed25519).unwrap(),
            None,
        )
        .unwrap();
        let subject = Subject {
            common_name: "gw1".into(),
            ..Subject::default()
        };
        let der = intake(&csr_der(&key, &subject).unwrap()).unwrap();
        let pem = intake(csr_pem(&key, &subject).unwrap().as_bytes()).unwrap();
        assert_eq!(der.public_key, pem.public_key);
    }

    #[test]
    fn malformed_requests_get_clear_errors() {
        assert!(matches!(intake(b"not a csr"), Err(Error::Csr(_))));
        assert!(matches!(
            intake(b"-----BEGIN CERTIFICATE REQUEST-----\n!!\n-----END CERTIFICATE REQUEST-----\n"),
            Err(Error::Decode { .. })
        ));
        let err = intake(&vec![0x30; MAX_CERT_LEN * 2 + 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("over the limit"), "{err}");
    }
}
