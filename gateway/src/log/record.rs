//! The canonical encoding of a log record, its hash, and the hash link. Pure code: bytes in,
//! values out. The format is specified in `gateway/docs/message-log.md`.
//!
//! ```text
//!  record      = "BBLR" ‖ version:u8 ‖ seq:u64 ‖ prev_hash:[32] ‖ side:u8 ‖ kind:u8 ‖ emergency:u8
//!                ‖ logged_at_ms:u64 ‖ str message_id ‖ str client ‖ str service
//!                ‖ opt user_id ‖ opt data_subject ‖ opt purpose_of_use
//!                ‖ bytes descriptor ‖ bytes signature ‖ signer
//!                ‖ body_len:u64 ‖ body_sha256:[32]
//!  signer      = version 0x02: signer_certificate_sha256:[32] (the log and archives keep each
//!                certificate once, by that hash);  version 0x01: bytes signer_certificate (DER)
//!  str, bytes  = len:u32 ‖ that many bytes          (integers big-endian)
//!  opt         = 0x00 | 0x01 ‖ str
//!  record_hash = SHA-256(record); the first record's prev_hash is 32 zero bytes
//! ```

use sha2::{Digest, Sha256};

/// A SHA-256 value: a record hash, a body hash, a Merkle node.
pub type Hash = [u8; 32];

/// The first bytes of every encoded record.
pub const MAGIC: &[u8; 4] = b"BBLR";

/// The record format version this code writes: the signer certificate by its SHA-256.
pub const VERSION: u8 = 0x02;

/// The first record format version, with the signer certificate's DER in every record; still
/// read.
pub const VERSION_1: u8 = 0x01;

/// The `prev_hash` of the first record of a log.
pub const GENESIS: Hash = [0; 32];

/// Longest identifier, user id, data subject or purpose: X-Road identifiers are a few hundred
/// bytes at most; 4 KiB leaves room without letting a record grow unbounded.
pub const MAX_TEXT_LEN: usize = 4096;

/// Longest descriptor, signature or certificate: a descriptor is under a kilobyte, a batch
/// signature a few, a certificate a few; 1 MiB refuses nonsense early.
pub const MAX_BLOB_LEN: usize = 1 << 20;

/// Which gateway logged the record: the one that sent the request, or the one that served it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client's gateway.
    Client,
    /// The provider's gateway.
    Provider,
}

/// Whether the record holds a request or a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A request.
    Request,
    /// A response.
    Response,
}

/// One record as it is hashed and stored, without its (encrypted) body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position in the log, from 0, without gaps.
    pub seq: u64,
    /// The hash of the record before it; [`GENESIS`] for the first.
    pub prev_hash: Hash,
    /// Which gateway logged it.
    pub side: Side,
    /// Request or response.
    pub kind: Kind,
    /// Whether the client declared an emergency access.
    pub emergency: bool,
    /// When the gateway logged it, milliseconds since the Unix epoch.
    pub logged_at_ms: u64,
    /// The X-Road message id (`X-Road-Id`).
    pub message_id: String,
    /// The client subsystem, as an X-Road identifier string.
    pub client: String,
    /// The service, as an X-Road identifier string.
    pub service: String,
    /// The end user at the client (`X-Road-UserId`), when given.
    pub user_id: Option<String>,
    /// The person whose data the exchange is about, when given.
    pub data_subject: Option<String>,
    /// The declared purpose of use, when given.
    pub purpose_of_use: Option<String>,
    /// The encoded signed descriptor (`gateway::signed`).
    pub descriptor: Vec<u8>,
    /// The member's batch signature over the descriptor.
    pub signature: Vec<u8>,
    /// The member signing certificate that verifies the signature.
    pub signer_certificate: SignerCertificate,
    /// Length of the body plaintext.
    pub body_len: u64,
    /// SHA-256 of the body plaintext.
    pub body_sha256: Hash,
}

/// The member signing certificate of a record: by its SHA-256 (what this code writes), or its DER
/// (records of format version 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignerCertificate {
    /// SHA-256 of the certificate's DER; the DER is stored once beside the records.
    Sha256(Hash),
    /// The certificate's DER, in the record itself (version 1 records).
    Der(Vec<u8>),
}

impl SignerCertificate {
    /// SHA-256 of the certificate's DER: the key it is stored and looked up by.
    pub fn sha256(&self) -> Hash {
        match self {
            SignerCertificate::Sha256(hash) => *hash,
            SignerCertificate::Der(der) => certificate_hash(der),
        }
    }
}

/// Why bytes did not decode as a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes ended inside a field.
    #[error("truncated in {field}: {needed} more bytes needed, {left} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left.
        left: usize,
    },
    /// A field's value is not allowed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Bytes follow the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
}

// === impl Record ===

impl Record {
    /// The canonical encoding (the bytes that are hashed and stored).
    ///
    /// # Errors
    ///
    /// The name and length of a field over [`MAX_TEXT_LEN`] or [`MAX_BLOB_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, (&'static str, usize, usize)> {
        let texts = [
            ("message_id", Some(&self.message_id)),
            ("client", Some(&self.client)),
            ("service", Some(&self.service)),
            ("user_id", self.user_id.as_ref()),
            ("data_subject", self.data_subject.as_ref()),
            ("purpose_of_use", self.purpose_of_use.as_ref()),
        ];
        for (what, text) in texts {
            let len = text.map_or(0, String::len);
            if len > MAX_TEXT_LEN {
                return Err((what, len, MAX_TEXT_LEN));
            }
        }
        let der = match &self.signer_certificate {
            SignerCertificate::Der(der) => der.as_slice(),
            SignerCertificate::Sha256(_) => &[],
        };
        let blobs = [
            ("descriptor", &self.descriptor[..]),
            ("signature", &self.signature[..]),
            ("signer_certificate", der),
        ];
        for (what, blob) in blobs {
            if blob.len() > MAX_BLOB_LEN {
                return Err((what, blob.len(), MAX_BLOB_LEN));
            }
        }
        let mut out = Vec::with_capacity(
            160 + self.descriptor.len() + self.signature.len() + der.len() + self.message_id.len(),
        );
        out.extend_from_slice(MAGIC);
        out.push(match self.signer_certificate {
            SignerCertificate::Sha256(_) => VERSION,
            SignerCertificate::Der(_) => VERSION_1,
        });
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev_hash);
        out.push(side_code(self.side));
        out.push(kind_code(self.kind));
        out.push(u8::from(self.emergency));
        out.extend_from_slice(&self.logged_at_ms.to_be_bytes());
        put_bytes(&mut out, self.message_id.as_bytes());
        put_bytes(&mut out, self.client.as_bytes());
        put_bytes(&mut out, self.service.as_bytes());
        for text in [&self.user_id, &self.data_subject, &self.purpose_of_use] {
            match text {
                None => out.push(0),
                Some(text) => {
                    out.push(1);
                    put_bytes(&mut out, text.as_bytes());
                }
            }
        }
        put_bytes(&mut out, &self.descriptor);
        put_bytes(&mut out, &self.signature);
        match &self.signer_certificate {
            SignerCertificate::Sha256(hash) => out.extend_from_slice(hash),
            SignerCertificate::Der(der) => put_bytes(&mut out, der),
        }
        out.extend_from_slice(&self.body_len.to_be_bytes());
        out.extend_from_slice(&self.body_sha256);
        Ok(out)
    }

    /// Decodes a canonical encoding, refusing anything [`Record::encode`] would not write.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { bytes };
        if r.take("magic", MAGIC.len())? != MAGIC {
            return Err(invalid("magic", "not a message log record"));
        }
        let version = r.u8("version")?;
        if version != VERSION && version != VERSION_1 {
            return Err(invalid(
                "version",
                format!("{version:#04x}, expected {VERSION:#04x} or {VERSION_1:#04x}"),
            ));
        }
        let seq = r.u64("seq")?;
        let prev_hash = r.hash("prev_hash")?;
        let side = match r.u8("side")? {
            1 => Side::Client,
            2 => Side::Provider,
            other => return Err(invalid("side", format!("{other}"))),
        };
        let kind = match r.u8("kind")? {
            1 => Kind::Request,
            2 => Kind::Response,
            other => return Err(invalid("kind", format!("{other}"))),
        };
        let emergency = match r.u8("emergency")? {
            0 => false,
            1 => true,
            other => return Err(invalid("emergency", format!("{other}"))),
        };
        let logged_at_ms = r.u64("logged_at_ms")?;
        let message_id = r.text("message_id")?;
        let client = r.text("client")?;
        let service = r.text("service")?;
        let user_id = r.optional_text("user_id")?;
        let data_subject = r.optional_text("data_subject")?;
        let purpose_of_use = r.optional_text("purpose_of_use")?;
        let descriptor = r.blob("descriptor")?;
        let signature = r.blob("signature")?;
        let signer_certificate = if version == VERSION {
            SignerCertificate::Sha256(r.hash("signer_certificate_sha256")?)
        } else {
            SignerCertificate::Der(r.blob("signer_certificate")?)
        };
        let body_len = r.u64("body_len")?;
        let body_sha256 = r.hash("body_sha256")?;
        if !r.bytes.is_empty() {
            return Err(DecodeError::Trailing(r.bytes.len()));
        }
        Ok(Record {
            seq,
            prev_hash,
            side,
            kind,
            emergency,
            logged_at_ms,
            message_id,
            client,
            service,
            user_id,
            data_subject,
            purpose_of_use,
            descriptor,
            signature,
            signer_certificate,
            body_len,
            body_sha256,
        })
    }
}

/// The record hash: SHA-256 of the canonical encoding.
pub fn record_hash(encoded: &[u8]) -> Hash {
    Sha256::digest(encoded).into()
}

/// SHA-256 of a body's plaintext.
pub fn body_hash(body: &[u8]) -> Hash {
    Sha256::digest(body).into()
}

/// SHA-256 of a signer certificate's DER: how version 2 records name it, and the key it is
/// stored and looked up by.
pub fn certificate_hash(der: &[u8]) -> Hash {
    Sha256::digest(der).into()
}

fn side_code(side: Side) -> u8 {
    match side {
        Side::Client => 1,
        Side::Provider => 2,
    }
}

fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::Request => 1,
        Kind::Response => 2,
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths were checked against the limits, which fit in a u32.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A cursor over untrusted bytes: every read checks the bytes left.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated {
                field,
                needed: n,
                left: self.bytes.len(),
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn hash(&mut self, field: &'static str) -> Result<Hash, DecodeError> {
        self.array(field)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let Some((head, rest)) = self.bytes.split_first_chunk::<N>() else {
            return Err(DecodeError::Truncated {
                field,
                needed: N,
                left: self.bytes.len(),
            });
        };
        self.bytes = rest;
        Ok(*head)
    }

    pub(crate) fn blob_max(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<Vec<u8>, DecodeError> {
        let len = u32::from_be_bytes(self.array(field)?);
        let len =
            usize::try_from(len).map_err(|_| invalid(field, "length does not fit in memory"))?;
        if len > max {
            return Err(invalid(
                field,
                format!("{len} bytes, over the limit of {max}"),
            ));
        }
        Ok(self.take(field, len)?.to_vec())
    }

    fn blob(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        self.blob_max(field, MAX_BLOB_LEN)
    }

    fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.blob_max(field, MAX_TEXT_LEN)?;
        String::from_utf8(bytes).map_err(|_| invalid(field, "not UTF-8"))
    }

    fn optional_text(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => self.text(field).map(Some),
            other => Err(invalid(field, format!("presence byte {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(seq: u64) -> Record {
        Record {
            seq,
            prev_hash: [7; 32],
            side: Side::Provider,
            kind: Kind::Request,
            emergency: true,
            logged_at_ms: 1_764_000_000_000,
            message_id: "msg-1".into(),
            client: "EE/GOV/70000001/ehr".into(),
            service: "EE/GOV/70000002/pharmacy/prescriptions".into(),
            user_id: Some("EE38001010000".into()),
            data_subject: Some("EE49001010000".into()),
            purpose_of_use: None,
            descriptor: b"BBRQ...".to_vec(),
            signature: vec![1, 2, 3],
            signer_certificate: SignerCertificate::Sha256([9; 32]),
            body_len: 5,
            body_sha256: body_hash(b"hello"),
        }
    }

    #[test]
    fn round_trip_and_every_truncation_and_extension_refused() {
        let record = sample(42);
        let bytes = record.encode().unwrap();
        assert_eq!(Record::decode(&bytes).unwrap(), record);
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Record::decode(&longer), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn version_1_records_with_the_certificate_inside_still_read_and_hash_as_stored() {
        let mut record = sample(42);
        record.signer_certificate = SignerCertificate::Der(vec![0x30, 0x82, 0x01]);
        let bytes = record.encode().unwrap();
        assert_eq!(bytes[4], VERSION_1);
        assert_eq!(Record::decode(&bytes).unwrap(), record);
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            record.signer_certificate.sha256(),
            <[u8; 32]>::from(Sha256::digest([0x30, 0x82, 0x01]))
        );
        // The same record by reference is another record, with another hash.
        let by_hash = Record {
            signer_certificate: SignerCertificate::Sha256(record.signer_certificate.sha256()),
            ..record
        };
        let v2 = by_hash.encode().unwrap();
        assert_eq!(v2[4], VERSION);
        assert_ne!(record_hash(&v2), record_hash(&bytes));
        let mut unknown = v2.clone();
        unknown[4] = 0x03;
        assert!(matches!(
            Record::decode(&unknown),
            Err(DecodeError::Invalid {
                field: "version",
                ..
            })
        ));
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = sample(1);
        let hash = record_hash(&base.encode().unwrap());
        let mut variants = Vec::new();
        let mut v = base.clone();
        v.seq = 2;
        variants.push(v);
        let mut v = base.clone();
        v.prev_hash[0] ^= 1;
        variants.push(v);
        let mut v = base.clone();
        v.side = Side::Client;
        variants.push(v);
        let mut v = base.clone();
        v.emergency = false;
        variants.push(v);
        let mut v = base.clone();
        v.purpose_of_use = Some(String::new());
        variants.push(v);
        let mut v = base.clone();
        v.body_sha256[31] ^= 1;
        variants.push(v);
        let mut v = base.clone();
        v.signer_certificate = SignerCertificate::Sha256([8; 32]);
        variants.push(v);
        for v in variants {
            assert_ne!(record_hash(&v.encode().unwrap()), hash, "{v:?}");
        }
    }

    #[test]
    fn limits() {
        let mut record = sample(0);
        record.client = "x".repeat(MAX_TEXT_LEN + 1);
        assert_eq!(record.encode().unwrap_err().0, "client");
        let mut record = sample(0);
        record.signature = vec![0; MAX_BLOB_LEN + 1];
        assert_eq!(record.encode().unwrap_err().0, "signature");
    }
}
