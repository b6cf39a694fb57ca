//! Writing the KSI publications file: the calendar's certificates and every publication, signed
//! as a whole with PKCS#7 through the HSM, kept on disk and served over HTTP.
//!
//! Spec: Guardtime, "KSI Data Formats", "Publications file"; the layout is the one
//! `backbone_timestamping_verify::publications_file` parses:
//!
//! ```text
//!  "KSIPUBLF" 0x701 header { 0x01 version 2, 0x02 created, 0x03 repository URI? }
//!             0x702 certificate record* { 0x01 id, 0x02 DER }     the calendar key's
//!             0x703 publication record* (oldest first)
//!             0x704 PKCS#7 SignedData, detached, over every byte before it (cms.rs)
//! ```
//!
//! Stage: a publication is durable in the calendar store before the file is written; the file is
//! derived data. It is rewritten whole at each publication (temporary file, fsync, rename, fsync
//! of the directory), so a reader sees the old file or the new one, never a mix; a crash before
//! the rename leaves the old file, and the service writes a fresh one when it starts.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use backbone_timestamping_verify::publication::PublicationData;
use backbone_timestamping_verify::publications_file::{CertificateRecord, MAGIC};
use backbone_timestamping_verify::signature::PublicationRecord;
use backbone_timestamping_verify::tlv::{Encoder, Flags};

use crate::cms::{self, CmsSigner, Content};
use crate::error::Error;

/// The file format version written (the one Guardtime's files carry).
pub const VERSION: u64 = 2;
/// The file's name in the service's data directory, as Guardtime names theirs.
pub const FILE_NAME: &str = "ksi-publications.bin";

const TAG_HEADER: u16 = 0x701;
const TAG_CERTIFICATE: u16 = 0x702;
const TAG_PUBLICATION: u16 = 0x703;
const TAG_SIGNATURE: u16 = 0x704;

/// Signs publications files with the publications key and keeps the latest one.
#[derive(Debug)]
pub struct PublicationsFileSigner {
    cms: CmsSigner,
    path: Option<PathBuf>,
    repository_uri: Option<String>,
    latest: RwLock<Option<Arc<Vec<u8>>>>,
}

// === impl PublicationsFileSigner ===

impl PublicationsFileSigner {
    /// A signer whose certificate MUST carry the e-mail address verifiers require; `path` is
    /// where each new file is written (none: only kept in memory).
    pub fn new(cms: CmsSigner, path: Option<PathBuf>, repository_uri: Option<String>) -> Self {
        PublicationsFileSigner {
            cms,
            path,
            repository_uri,
            latest: RwLock::new(None),
        }
    }

    /// Builds and signs the file for `certificates` and `publications` (oldest first) created
    /// at `created`, writes it to the path, and keeps it as the latest.
    ///
    /// # Errors
    ///
    /// [`Error::Hsm`] if signing fails, [`Error::Ksi`] if encoding fails, [`Error::File`] if
    /// writing fails (the previous file is then still in place and still served).
    pub fn publish(
        &self,
        certificates: &[CertificateRecord],
        publications: &[PublicationData],
        created: u64,
    ) -> Result<Arc<Vec<u8>>, Error> {
        let bytes = Arc::new(encode(
            &self.cms,
            certificates,
            publications,
            created,
            self.repository_uri.as_deref(),
        )?);
        if let Some(path) = &self.path {
            write_atomically(path, &bytes)?;
        }
        *self.latest.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&bytes));
        Ok(bytes)
    }

    /// The latest file written, if any.
    pub fn latest(&self) -> Option<Arc<Vec<u8>>> {
        self.latest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where the file is written.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// Encodes and signs a publications file: pure, no I/O.
///
/// # Errors
///
/// [`Error::Hsm`] if signing fails, [`Error::Ksi`] if an element is too long to encode.
pub fn encode(
    cms: &CmsSigner,
    certificates: &[CertificateRecord],
    publications: &[PublicationData],
    created: u64,
    repository_uri: Option<&str>,
) -> Result<Vec<u8>, Error> {
    let mut out = Encoder::new();
    out.nested(TAG_HEADER, Flags::NONE, |e| {
        e.u64(0x01, VERSION)?;
        e.u64(0x02, created)?;
        match repository_uri {
            Some(uri) => e.string(0x03, &uri.into()),
            None => Ok(()),
        }
    })?;
    for certificate in certificates {
        out.nested(TAG_CERTIFICATE, Flags::NONE, |e| {
            e.element(0x01, Flags::NONE, &certificate.id)?;
            e.element(0x02, Flags::NONE, &certificate.certificate)
        })?;
    }
    for publication in publications {
        PublicationRecord::new(publication.clone()).encode(&mut out, TAG_PUBLICATION)?;
    }
    let mut body = MAGIC.to_vec();
    body.extend_from_slice(&out.finish());
    let options = cms::Options {
        include_certificates: true,
        signing_time: Some(created),
        signing_certificate_v2: false,
    };
    let signature = cms.sign(
        Content {
            content_type: cms::OID_DATA,
            bytes: &body,
            detached: true,
        },
        &options,
    )?;
    let mut tail = Encoder::new();
    tail.element(TAG_SIGNATURE, Flags::NONE, &signature)?;
    body.extend_from_slice(&tail.finish());
    Ok(body)
}

/// Replaces `path` with `bytes` so that readers see the old or the new file whole: a temporary
/// file beside it, fsync, rename over, fsync of the directory.
///
/// # Errors
///
/// [`Error::File`] naming the file that failed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::File {
            path: path.to_owned(),
            source,
        }
    }
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = File::create(&temporary).map_err(file_error(&temporary))?;
    file.write_all(bytes).map_err(file_error(&temporary))?;
    file.sync_all().map_err(file_error(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(file_error(path))?;
    File::open(directory)
        .and_then(|d| d.sync_all())
        .map_err(file_error(directory))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, SystemTime};

    use backbone_hsm::cert::{CertificateAuthority, Profile, Subject, Validity};
    use backbone_hsm::software::SoftwareKeyStore;
    use backbone_hsm::{KeyStore, KeyType};
    use backbone_timestamping_verify::imprint::HashAlgorithm;
    use backbone_timestamping_verify::publications_file::{PublicationsFile, TrustAnchors};

    #[test]
    fn the_verifier_accepts_the_file_and_refuses_a_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = SoftwareKeyStore::open(dir.path().join("keys")).unwrap();
        store.generate("ca", KeyType::EcP256).unwrap();
        store.generate("pub", KeyType::EcP256).unwrap();
        let (ca, key) = (
            store.signer("ca", None).unwrap(),
            store.signer("pub", None).unwrap(),
        );
        let not_before = SystemTime::now() - Duration::from_secs(60);
        let validity = |n: u8| Validity {
            not_before,
            not_after: not_before + Duration::from_secs(86_400),
            serial: vec![n],
        };
        let authority = CertificateAuthority::self_signed(
            ca.as_ref(),
            &Subject {
                common_name: "CA".into(),
                ..Subject::default()
            },
            &validity(1),
        )
        .unwrap();
        let subject = Subject {
            common_name: "publications".into(),
            email: Some("publications@backbone.example".into()),
            ..Subject::default()
        };
        let certificate = authority
            .issue(
                key.public_key(),
                &subject,
                Profile::MemberSigning,
                &validity(2),
            )
            .unwrap();
        let signer = PublicationsFileSigner::new(
            CmsSigner::new(key, &certificate, Vec::new()).unwrap(),
            Some(dir.path().join(FILE_NAME)),
            Some("https://timestamping.backbone.example/publications.bin".into()),
        );
        let records = [CertificateRecord {
            id: vec![1, 2, 3, 4],
            certificate: certificate.clone(),
        }];
        let hash = HashAlgorithm::Sha256.hash(&[b"root"]).unwrap();
        let publications = [
            PublicationData::new(3600, hash.clone()),
            PublicationData::new(7200, hash),
        ];
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let bytes = signer.publish(&records, &publications, now).unwrap();
        assert_eq!(std::fs::read(dir.path().join(FILE_NAME)).unwrap(), *bytes);
        assert_eq!(signer.latest().as_deref(), Some(&*bytes));

        let anchors = TrustAnchors::from_pem(
            backbone_hsm::cert::pem("CERTIFICATE", authority.certificate_der()).as_bytes(),
        )
        .unwrap()
        .with_signer_email("publications@backbone.example");
        let parsed = PublicationsFile::parse_unverified(&bytes).unwrap();
        assert_eq!(parsed.version, VERSION);
        assert_eq!(parsed.certificates, records);
        assert_eq!(parsed.publications.len(), 2);
        let at = i64::try_from(now).unwrap();
        parsed.clone().verify(&anchors, at).unwrap();
        // Another e-mail address is refused.
        assert!(
            parsed
                .verify(
                    &anchors
                        .clone()
                        .with_signer_email("publications@guardtime.com"),
                    at
                )
                .is_err()
        );
        // A flipped byte in the signed body: the digest no longer matches.
        let mut tampered = bytes.to_vec();
        tampered[20] ^= 1;
        let refused = PublicationsFile::parse_unverified(&tampered).map(|f| f.verify(&anchors, at));
        assert!(!matches!(refused, Ok(Ok(_))));
    }
}
