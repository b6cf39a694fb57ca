//! The records that close a signature: publication record (0x803), calendar authentication
//! record (0x805), and the RFC 3161 compatibility record (0x806) that opens a converted one.
//!
//! Spec: Guardtime, "KSI Data Formats", sections "Publication record", "Calendar authentication
//! record", "Signature data" and "RFC 3161 compatibility record" (as implemented by
//! guardtime/goksi `pdu/pdu.go` and `pdu/rfc3161.go`; RFC 3161 for the legacy structures).
//!
//! ```text
//!  0x803 publication record: 0x10 published data, 0x09 reference*, 0x0A repository URI*
//!  0x805 calendar auth record: 0x10 published data (signed, header included)
//!                              0x0B signature data: 0x01 type (OID), 0x02 value,
//!                                                   0x03 certificate id, 0x04 repository URI?
//!  0x806 RFC 3161 record: 0x02 time, 0x03 index*, 0x04 input data?, 0x05 input hash,
//!        0x10/0x11/0x12 TSTInfo prefix/suffix/algorithm,
//!        0x13/0x14/0x15 signed attributes prefix/suffix/algorithm
//! ```

use crate::error::{DecodeError, Error};
use crate::imprint::{HashAlgorithm, Imprint};
use crate::publication::{PublicationData, TAG_PUBLICATION_DATA};
use crate::signature::aggregation::{MAX_CHAIN_INDEX, algorithm_of};
use crate::tlv::{self, Encoder, Flags, KsiString, Tlv, TlvRef};

/// The tag of a publication record.
pub const TAG_PUBLICATION_RECORD: u16 = 0x803;
/// The tag of a calendar authentication record.
pub const TAG_CALENDAR_AUTH_RECORD: u16 = 0x805;
/// The tag of an RFC 3161 compatibility record.
pub const TAG_RFC3161_RECORD: u16 = 0x806;
/// Publication references or repository URIs in one record.
pub const MAX_REFERENCES: usize = 64;

const TAG_REFERENCE: u16 = 0x09;
const TAG_REPOSITORY_URI: u16 = 0x0a;
const TAG_SIGNATURE_DATA: u16 = 0x0b;
const TAG_SIGNATURE_TYPE: u16 = 0x01;
const TAG_SIGNATURE_VALUE: u16 = 0x02;
const TAG_CERTIFICATE_ID: u16 = 0x03;
const TAG_CERTIFICATE_URI: u16 = 0x04;

/// A published calendar root, with where it was published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicationRecord {
    /// The published data.
    pub publication: PublicationData,
    /// Bibliographic references to where it appeared.
    pub references: Vec<KsiString>,
    /// URIs of publication repositories (files).
    pub repository_uris: Vec<KsiString>,
    /// Unknown non-critical elements, kept for re-encoding.
    pub unknown: Vec<Tlv>,
}

impl PublicationRecord {
    /// A record with no references.
    pub fn new(publication: PublicationData) -> Self {
        PublicationRecord {
            publication,
            references: Vec::new(),
            repository_uris: Vec::new(),
            unknown: Vec::new(),
        }
    }

    /// Decodes a 0x803 element (also used for the 0x703 records of a publications file).
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for missing, repeated or malformed fields and unknown critical elements.
    pub fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        let p = tlv.tag();
        let (mut publication, mut references, mut repository_uris, mut unknown) =
            (None, vec![], vec![], vec![]);
        for child in tlv.children() {
            let child = child?;
            match child.tag() {
                TAG_PUBLICATION_DATA => tlv::once(
                    &mut publication,
                    p,
                    TAG_PUBLICATION_DATA,
                    PublicationData::decode(&child)?,
                )?,
                TAG_REFERENCE => tlv::push_limited(
                    &mut references,
                    child.as_string()?,
                    "publication references",
                    MAX_REFERENCES,
                )?,
                TAG_REPOSITORY_URI => {
                    tlv::push_limited(
                        &mut repository_uris,
                        child.as_string()?,
                        "repository URIs",
                        MAX_REFERENCES,
                    )?;
                }
                _ => tlv::unknown(p, &child, &mut unknown)?,
            }
        }
        let publication = tlv::required(publication, p, TAG_PUBLICATION_DATA)?;
        Ok(PublicationRecord {
            publication,
            references,
            repository_uris,
            unknown,
        })
    }

    /// Writes the record under `tag` (0x803 in a signature, 0x703 in a publications file).
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] for oversized parts.
    pub fn encode(&self, out: &mut Encoder, tag: u16) -> Result<(), Error> {
        out.nested(tag, Flags::NONE, |e| {
            self.publication.encode(e, Flags::FORWARD)?;
            self.references
                .iter()
                .try_for_each(|r| e.string(TAG_REFERENCE, r))?;
            self.repository_uris
                .iter()
                .try_for_each(|r| e.string(TAG_REPOSITORY_URI, r))?;
            e.tlvs(&self.unknown)
        })
    }
}

/// A calendar root signed with the calendar's key, before it is published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalendarAuthRecord {
    /// The signed published data.
    pub publication: PublicationData,
    /// The signature over it.
    pub signature: SignatureData,
    /// Unknown non-critical elements, kept for re-encoding.
    pub unknown: Vec<Tlv>,
    signed_bytes: Vec<u8>,
}

/// A PKI signature and the certificate to check it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureData {
    /// The signature algorithm's dotted OID, e.g. `1.2.840.113549.1.1.11` (SHA-256 with RSA).
    pub signature_type: KsiString,
    /// The signature value.
    pub signature_value: Vec<u8>,
    /// The id of the certificate in the publications file.
    pub certificate_id: Vec<u8>,
    /// Where the certificate can be found.
    pub certificate_repository_uri: Option<KsiString>,
    /// Unknown non-critical elements, kept for re-encoding.
    pub unknown: Vec<Tlv>,
}

impl CalendarAuthRecord {
    /// A record over `publication`; the bytes to sign are [`CalendarAuthRecord::signed_bytes`].
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] for oversized parts.
    pub fn new(publication: PublicationData, signature: SignatureData) -> Result<Self, Error> {
        let mut e = Encoder::new();
        publication.encode(&mut e, Flags::FORWARD)?;
        Ok(CalendarAuthRecord {
            publication,
            signature,
            unknown: Vec::new(),
            signed_bytes: e.finish(),
        })
    }

    /// The signed bytes: the published data element, header included, exactly as read.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed_bytes
    }

    /// Decodes a 0x805 element.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for missing, repeated or malformed fields and unknown critical elements.
    pub fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        const P: u16 = TAG_CALENDAR_AUTH_RECORD;
        tlv.expect_tag(P)?;
        let (mut publication, mut signature, mut unknown) = (None, None, Vec::new());
        for child in tlv.children() {
            let child = child?;
            match child.tag() {
                TAG_PUBLICATION_DATA => {
                    let data = (PublicationData::decode(&child)?, child.raw().to_vec());
                    tlv::once(&mut publication, P, TAG_PUBLICATION_DATA, data)?;
                }
                TAG_SIGNATURE_DATA => tlv::once(
                    &mut signature,
                    P,
                    TAG_SIGNATURE_DATA,
                    SignatureData::decode(&child)?,
                )?,
                _ => tlv::unknown(P, &child, &mut unknown)?,
            }
        }
        let (publication, signed_bytes) = tlv::required(publication, P, TAG_PUBLICATION_DATA)?;
        let signature = tlv::required(signature, P, TAG_SIGNATURE_DATA)?;
        Ok(CalendarAuthRecord {
            publication,
            signature,
            unknown,
            signed_bytes,
        })
    }

    /// Writes the record as a 0x805 element, the signed bytes unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] for oversized parts.
    pub fn encode(&self, out: &mut Encoder) -> Result<(), Error> {
        out.nested(TAG_CALENDAR_AUTH_RECORD, Flags::NONE, |e| {
            e.raw(&self.signed_bytes);
            self.signature.encode(e)?;
            e.tlvs(&self.unknown)
        })
    }
}

impl SignatureData {
    fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        const P: u16 = TAG_SIGNATURE_DATA;
        let (mut signature_type, mut signature_value, mut certificate_id, mut uri) =
            (None, None, None, None);
        let mut unknown = Vec::new();
        for child in tlv.children() {
            let child = child?;
            match child.tag() {
                TAG_SIGNATURE_TYPE => tlv::once(
                    &mut signature_type,
                    P,
                    TAG_SIGNATURE_TYPE,
                    child.as_string()?,
                )?,
                TAG_SIGNATURE_VALUE => tlv::once(
                    &mut signature_value,
                    P,
                    TAG_SIGNATURE_VALUE,
                    child.value().to_vec(),
                )?,
                TAG_CERTIFICATE_ID => tlv::once(
                    &mut certificate_id,
                    P,
                    TAG_CERTIFICATE_ID,
                    child.value().to_vec(),
                )?,
                TAG_CERTIFICATE_URI => {
                    tlv::once(&mut uri, P, TAG_CERTIFICATE_URI, child.as_string()?)?
                }
                _ => tlv::unknown(P, &child, &mut unknown)?,
            }
        }
        Ok(SignatureData {
            signature_type: tlv::required(signature_type, P, TAG_SIGNATURE_TYPE)?,
            signature_value: tlv::required(signature_value, P, TAG_SIGNATURE_VALUE)?,
            certificate_id: tlv::required(certificate_id, P, TAG_CERTIFICATE_ID)?,
            certificate_repository_uri: uri,
            unknown,
        })
    }

    fn encode(&self, out: &mut Encoder) -> Result<(), Error> {
        out.nested(TAG_SIGNATURE_DATA, Flags::NONE, |e| {
            e.string(TAG_SIGNATURE_TYPE, &self.signature_type)?;
            e.element(TAG_SIGNATURE_VALUE, Flags::NONE, &self.signature_value)?;
            e.element(TAG_CERTIFICATE_ID, Flags::NONE, &self.certificate_id)?;
            if let Some(uri) = &self.certificate_repository_uri {
                e.string(TAG_CERTIFICATE_URI, uri)?;
            }
            e.tlvs(&self.unknown)
        })
    }
}

/// The legacy RFC 3161 structures around the hash, kept so that converted signatures verify.
///
/// The document hash went into a TSTInfo, whose hash went into SignedAttributes, whose hash is
/// the first aggregation chain's input: see [`Rfc3161Record::output_hash`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rfc3161Record {
    /// As in the first aggregation chain.
    pub aggregation_time: u64,
    /// As in the first aggregation chain.
    pub chain_index: Vec<u64>,
    /// Optional input data.
    pub input_data: Option<Vec<u8>>,
    /// The document hash.
    pub input_hash: Imprint,
    /// TSTInfo bytes before the document hash.
    pub tst_info_prefix: Vec<u8>,
    /// TSTInfo bytes after the document hash.
    pub tst_info_suffix: Vec<u8>,
    /// The hash function over TSTInfo.
    pub tst_info_algorithm: HashAlgorithm,
    /// SignedAttributes bytes before the TSTInfo hash.
    pub signed_attributes_prefix: Vec<u8>,
    /// SignedAttributes bytes after the TSTInfo hash.
    pub signed_attributes_suffix: Vec<u8>,
    /// The hash function over SignedAttributes.
    pub signed_attributes_algorithm: HashAlgorithm,
    /// Unknown non-critical elements, kept for re-encoding.
    pub unknown: Vec<Tlv>,
}

impl Rfc3161Record {
    /// The record's output, hashed with `algorithm` (that of the first aggregation chain's
    /// input) over the imprint of `H_sa(sa_prefix || H_tst(tst_prefix || doc || tst_suffix) ||
    /// sa_suffix)`, the inner hashes taken as bare digests.
    ///
    /// # Errors
    ///
    /// [`Error::HashUnavailable`] if OpenSSL lacks one of the functions.
    pub fn output_hash(&self, algorithm: HashAlgorithm) -> Result<Imprint, Error> {
        let tst_info = self.tst_info_algorithm.hash(&[
            &self.tst_info_prefix,
            self.input_hash.digest(),
            &self.tst_info_suffix,
        ])?;
        let signed_attributes = self.signed_attributes_algorithm.hash(&[
            &self.signed_attributes_prefix,
            tst_info.digest(),
            &self.signed_attributes_suffix,
        ])?;
        algorithm.hash(&[signed_attributes.as_bytes()])
    }

    /// Decodes a 0x806 element.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for missing, repeated or malformed fields and unknown critical elements.
    pub fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        const P: u16 = TAG_RFC3161_RECORD;
        tlv.expect_tag(P)?;
        let (mut time, mut input_data, mut input_hash) = (None, None, None);
        let (mut tst_prefix, mut tst_suffix, mut tst_algorithm) = (None, None, None);
        let (mut sa_prefix, mut sa_suffix, mut sa_algorithm) = (None, None, None);
        let (mut chain_index, mut unknown) = (Vec::new(), Vec::new());
        for child in tlv.children() {
            let child = child?;
            let tag = child.tag();
            match tag {
                0x02 => tlv::once(&mut time, P, tag, child.as_u64()?)?,
                0x03 => tlv::push_limited(
                    &mut chain_index,
                    child.as_u64()?,
                    "chain index",
                    MAX_CHAIN_INDEX,
                )?,
                0x04 => tlv::once(&mut input_data, P, tag, child.value().to_vec())?,
                0x05 => tlv::once(&mut input_hash, P, tag, child.as_imprint()?)?,
                0x10 => tlv::once(&mut tst_prefix, P, tag, child.value().to_vec())?,
                0x11 => tlv::once(&mut tst_suffix, P, tag, child.value().to_vec())?,
                0x12 => tlv::once(&mut tst_algorithm, P, tag, algorithm_of(&child)?)?,
                0x13 => tlv::once(&mut sa_prefix, P, tag, child.value().to_vec())?,
                0x14 => tlv::once(&mut sa_suffix, P, tag, child.value().to_vec())?,
                0x15 => tlv::once(&mut sa_algorithm, P, tag, algorithm_of(&child)?)?,
                _ => tlv::unknown(P, &child, &mut unknown)?,
            }
        }
        if chain_index.is_empty() {
            return Err(DecodeError::Missing {
                parent: P,
                tag: 0x03,
            });
        }
        Ok(Rfc3161Record {
            aggregation_time: tlv::required(time, P, 0x02)?,
            chain_index,
            input_data,
            input_hash: tlv::required(input_hash, P, 0x05)?,
            tst_info_prefix: tlv::required(tst_prefix, P, 0x10)?,
            tst_info_suffix: tlv::required(tst_suffix, P, 0x11)?,
            tst_info_algorithm: tlv::required(tst_algorithm, P, 0x12)?,
            signed_attributes_prefix: tlv::required(sa_prefix, P, 0x13)?,
            signed_attributes_suffix: tlv::required(sa_suffix, P, 0x14)?,
            signed_attributes_algorithm: tlv::required(sa_algorithm, P, 0x15)?,
            unknown,
        })
    }

    /// Writes the record as a 0x806 element.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] for an empty chain index or oversized parts.
    pub fn encode(&self, out: &mut Encoder) -> Result<(), Error> {
        if self.chain_index.is_empty() {
            return Err(Error::Encode {
                what: "RFC 3161 record",
                why: "empty chain index",
            });
        }
        out.nested(TAG_RFC3161_RECORD, Flags::NONE, |e| {
            e.u64(0x02, self.aggregation_time)?;
            self.chain_index.iter().try_for_each(|i| e.u64(0x03, *i))?;
            if let Some(data) = &self.input_data {
                e.element(0x04, Flags::NONE, data)?;
            }
            e.imprint(0x05, &self.input_hash)?;
            e.element(0x10, Flags::NONE, &self.tst_info_prefix)?;
            e.element(0x11, Flags::NONE, &self.tst_info_suffix)?;
            e.u64(0x12, u64::from(self.tst_info_algorithm.id()))?;
            e.element(0x13, Flags::NONE, &self.signed_attributes_prefix)?;
            e.element(0x14, Flags::NONE, &self.signed_attributes_suffix)?;
            e.u64(0x15, u64::from(self.signed_attributes_algorithm.id()))?;
            e.tlvs(&self.unknown)
        })
    }
}
