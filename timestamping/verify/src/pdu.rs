//! Aggregator and extender protocol data units, version 2, with their HMAC.
//!
//! Spec: Guardtime, "KSI Data Formats", sections "Aggregator PDU", "Extender PDU" and "MAC"
//! (as implemented by guardtime/goksi `pdu/aggr_*.go`, `pdu/ext_*.go`).
//!
//! ```text
//!  0x220 aggregator request   0x221 aggregator response   0x320 extender request   0x321 response
//!    0x01 header: 0x01 login id, 0x02 instance id?, 0x03 message id?             first
//!    payloads: 0x02 request/response, 0x03 error (response only), 0x04 configuration,
//!              0x05 acknowledgement (aggregator only)
//!    0x1F MAC: HMAC imprint over every PDU byte before the digest                last
//! ```
//!
//! A response PDU that carries only an error (0x03) may lack the header and the MAC. Decoding
//! never checks the MAC; call `check_mac` with the shared key before trusting a response.

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use crate::error::{DecodeError, Error};
use crate::imprint::{HashAlgorithm, Imprint};
use crate::signature::aggregation::TAG_AGGREGATION_CHAIN;
use crate::signature::calendar::TAG_CALENDAR_CHAIN;
use crate::signature::records::{
    TAG_CALENDAR_AUTH_RECORD, TAG_PUBLICATION_RECORD, TAG_RFC3161_RECORD,
};
use crate::signature::{
    AggregationChain, CalendarAuthRecord, CalendarChain, PublicationRecord, Rfc3161Record,
};
use crate::tlv::{self, Encoder, Flags, KsiString, Tlv, TlvRef};

/// Aggregator request PDU tag.
pub const TAG_AGGREGATOR_REQUEST: u16 = 0x220;
/// Aggregator response PDU tag.
pub const TAG_AGGREGATOR_RESPONSE: u16 = 0x221;
/// Extender request PDU tag.
pub const TAG_EXTENDER_REQUEST: u16 = 0x320;
/// Extender response PDU tag.
pub const TAG_EXTENDER_RESPONSE: u16 = 0x321;
/// Payloads in one PDU: services batch responses, but not without bound.
pub const MAX_PAYLOADS: usize = 1024;

const TAG_HEADER: u16 = 0x01;
const TAG_PAYLOAD: u16 = 0x02;
const TAG_ERROR: u16 = 0x03;
const TAG_CONFIG: u16 = 0x04;
const TAG_ACK: u16 = 0x05;
const TAG_MAC: u16 = 0x1f;

/// The PDU header: who sends, and numbers for duplicate filtering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The login id the MAC key belongs to.
    pub login_id: KsiString,
    /// Increases every time the sender restarts.
    pub instance_id: Option<u64>,
    /// Numbers the messages within one instance.
    pub message_id: Option<u64>,
}

/// A request to extend: the calendar chain from a round to a publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtendRequest {
    /// Matches the response to the request.
    pub request_id: u64,
    /// The round the chain starts from.
    pub aggregation_time: u64,
    /// The calendar root to reach; absent means the newest.
    pub publication_time: Option<u64>,
}

/// The extender's answer to one [`ExtendRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtendResponse {
    /// The request's id.
    pub request_id: u64,
    /// Zero on success, else a KSI status code.
    pub status: u64,
    /// The service's error message.
    pub error_message: Option<KsiString>,
    /// The newest round the extender has.
    pub calendar_last: Option<u64>,
    /// The chain asked for.
    pub calendar_chain: Option<CalendarChain>,
}

/// A request to sign a hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregationRequest {
    /// Matches the response to the request.
    pub request_id: u64,
    /// The hash to sign, or the root of the client's own tree.
    pub hash: Imprint,
    /// The level of `hash` in the client's tree, absent for a plain document hash.
    pub level: Option<u64>,
}

/// The aggregator's answer to one [`AggregationRequest`]: the parts of a signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregationResponse {
    /// The request's id.
    pub request_id: u64,
    /// Zero on success, else a KSI status code.
    pub status: u64,
    /// The service's error message.
    pub error_message: Option<KsiString>,
    /// Aggregation chains, lowest first.
    pub aggregation_chains: Vec<AggregationChain>,
    /// The calendar chain, if the round is already in the calendar.
    pub calendar_chain: Option<CalendarChain>,
    /// A publication record.
    pub publication_record: Option<PublicationRecord>,
    /// A calendar authentication record.
    pub calendar_auth_record: Option<CalendarAuthRecord>,
    /// An RFC 3161 record.
    pub rfc3161_record: Option<Rfc3161Record>,
}

/// A reduced error PDU payload, sent when the service cannot fill in a full response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceError {
    /// The KSI status code.
    pub status: u64,
    /// The message.
    pub message: Option<KsiString>,
}

/// A decoded PDU of any of the four kinds. Unknown non-critical payloads are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdu<P> {
    /// The tag: one of the four `TAG_*` constants.
    pub tag: u16,
    /// The header; absent only in error-only responses.
    pub header: Option<Header>,
    /// The request or response payloads.
    pub payloads: Vec<P>,
    /// A reduced error payload (responses only).
    pub error: Option<ServiceError>,
    /// A configuration payload, kept as raw elements.
    pub config: Option<Vec<Tlv>>,
    /// Unknown non-critical payloads.
    pub unknown: Vec<Tlv>,
    /// The MAC; absent only in error-only responses.
    pub mac: Option<Imprint>,
    raw: Vec<u8>,
}

/// An extender response PDU.
pub type ExtenderResponse = Pdu<ExtendResponse>;
/// An extender request PDU.
pub type ExtenderRequest = Pdu<ExtendRequest>;
/// An aggregator response PDU.
pub type AggregatorResponse = Pdu<AggregationResponse>;
/// An aggregator request PDU.
pub type AggregatorRequest = Pdu<AggregationRequest>;

/// A payload kind: how it decodes and encodes inside its PDU.
pub trait Payload: Sized {
    /// The PDU tag this payload travels in.
    const PDU_TAG: u16;
    /// What to call it in errors.
    const WHAT: &'static str;
    /// Decodes one 0x02 payload.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for malformed content.
    fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError>;
    /// Encodes it as a 0x02 element.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] for oversized content.
    fn encode(&self, out: &mut Encoder) -> Result<(), Error>;
}

// === impl Pdu ===

impl<P: Payload> Pdu<P> {
    /// A PDU with a header and payloads, to be sealed with [`Pdu::encode`].
    pub fn new(header: Header, payloads: Vec<P>) -> Self {
        Pdu {
            tag: P::PDU_TAG,
            header: Some(header),
            payloads,
            error: None,
            config: None,
            unknown: Vec::new(),
            mac: None,
            raw: Vec::new(),
        }
    }

    /// Decodes a PDU without checking its MAC.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for a wrong tag, a misplaced header or MAC, or a malformed payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        decode_pdu(bytes).map_err(Error::decode(P::WHAT))
    }

    /// Checks the MAC with `key`, and that it uses `algorithm`.
    ///
    /// # Errors
    ///
    /// [`Error::Service`] for an error-only PDU, [`Error::Mac`] for a missing or wrong MAC.
    pub fn check_mac(&self, key: &[u8], algorithm: HashAlgorithm) -> Result<(), Error> {
        if let (None, Some(e)) = (&self.mac, &self.error) {
            return Err(Error::Service {
                what: P::WHAT,
                status: e.status,
                message: e.message.clone().unwrap_or_default().to_string(),
            });
        }
        let mac = self.mac.as_ref().ok_or(Error::Mac { what: P::WHAT })?;
        if mac.algorithm() != algorithm {
            return Err(Error::Mac { what: P::WHAT });
        }
        let covered = self
            .raw
            .get(..self.raw.len().saturating_sub(algorithm.digest_len()));
        let expected = hmac(algorithm, key, covered.unwrap_or_default())?;
        if expected.len() != mac.digest().len() || !openssl::memcmp::eq(&expected, mac.digest()) {
            return Err(Error::Mac { what: P::WHAT });
        }
        Ok(())
    }

    /// Encodes the PDU and seals it with an HMAC under `key`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] without a header or for oversized content, [`Error::Crypto`] if HMAC fails.
    pub fn encode(&self, key: &[u8], algorithm: HashAlgorithm) -> Result<Vec<u8>, Error> {
        let header = self.header.as_ref().ok_or(Error::Encode {
            what: P::WHAT,
            why: "no header",
        })?;
        let mut body = Encoder::new();
        self.payloads.iter().try_for_each(|p| p.encode(&mut body))?;
        if let Some(config) = &self.config {
            body.nested(TAG_CONFIG, Flags::NONE, |e| e.tlvs(config))?;
        }
        body.tlvs(&self.unknown)?;
        seal::<P>(header, &body.finish(), key, algorithm)
    }

    /// The payload answering request `id`, if any.
    pub fn payload(&self, id: u64) -> Option<&P>
    where
        P: RequestId,
    {
        self.payloads.iter().find(|p| p.request_id() == id)
    }
}

/// Payloads matched to requests by id.
pub trait RequestId {
    /// The request id.
    fn request_id(&self) -> u64;
}

impl ExtendResponse {
    /// The calendar chain, if the extender succeeded.
    ///
    /// # Errors
    ///
    /// [`Error::Service`] for a non-zero status or a missing chain.
    pub fn chain(&self) -> Result<&CalendarChain, Error> {
        let message = || self.error_message.clone().unwrap_or_default().to_string();
        if self.status != 0 {
            return Err(Error::Service {
                what: "extender response",
                status: self.status,
                message: message(),
            });
        }
        self.calendar_chain.as_ref().ok_or(Error::Service {
            what: "extender response",
            status: 0,
            message: "no calendar chain in the response".into(),
        })
    }
}

/// Encodes a PDU of `P`'s kind from its header and the encoded elements after it (payloads,
/// configuration), and seals it with an HMAC under `key`: the bytes [`Pdu::encode`] writes. For
/// a service that encodes its payloads itself, e.g. with
/// [`AggregationResponse::encode_signed`].
///
/// # Errors
///
/// [`Error::Encode`] for oversized content, [`Error::Crypto`] if HMAC fails.
pub fn seal<P: Payload>(
    header: &Header,
    elements: &[u8],
    key: &[u8],
    algorithm: HashAlgorithm,
) -> Result<Vec<u8>, Error> {
    let mut body = Encoder::with_capacity(elements.len() + 64);
    body.nested(TAG_HEADER, Flags::NONE, |e| {
        e.string(0x01, &header.login_id)?;
        header.instance_id.map(|i| e.u64(0x02, i)).transpose()?;
        header
            .message_id
            .map(|i| e.u64(0x03, i))
            .transpose()
            .map(|_| ())
    })?;
    body.raw(elements);
    // The MAC covers the PDU header too, so write it with the final length, then a
    // placeholder digest, and fill the digest in last.
    let placeholder = Imprint::new(algorithm, &vec![0; algorithm.digest_len()])
        .map_err(|_| Error::Unreachable("placeholder digest length"))?;
    body.imprint(TAG_MAC, &placeholder)?;
    let body = body.finish();
    let mut out = Encoder::with_capacity(body.len() + 4);
    out.element(P::PDU_TAG, Flags::NONE, &body)?;
    let mut bytes = out.finish();
    let covered = bytes.len() - algorithm.digest_len();
    let digest = hmac(algorithm, key, bytes.get(..covered).unwrap_or_default())?;
    bytes.truncate(covered);
    bytes.extend_from_slice(&digest);
    Ok(bytes)
}

fn hmac(algorithm: HashAlgorithm, key: &[u8], data: &[u8]) -> Result<Vec<u8>, Error> {
    // OpenSSL refuses an empty key; so does this path, which gives OpenSSL's answers otherwise.
    if algorithm == HashAlgorithm::Sha256 && !key.is_empty() {
        return Ok(hmac_sha256(key, data));
    }
    let md: MessageDigest = algorithm.message_digest()?;
    let key = PKey::hmac(key).map_err(Error::crypto("HMAC key"))?;
    let mut signer = Signer::new(md, &key).map_err(|_| Error::HashUnavailable(algorithm))?;
    signer.update(data).map_err(Error::crypto("HMAC"))?;
    signer.sign_to_vec().map_err(Error::crypto("HMAC"))
}

/// HMAC-SHA-256 (RFC 2104) over `sha2`: the MAC every PDU of a busy service carries, without
/// OpenSSL's per-call key and algorithm set-up, which costs more than hashing a full PDU.
fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    let hashed;
    let key = if key.len() > block.len() {
        hashed = Sha256::digest(key);
        hashed.as_slice()
    } else {
        key
    };
    block.iter_mut().zip(key).for_each(|(b, k)| *b = *k);
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn decode_pdu<P: Payload>(bytes: &[u8]) -> Result<Pdu<P>, DecodeError> {
    let top = tlv::decode(bytes)?;
    let p = P::PDU_TAG;
    top.expect_tag(p)?;
    let (mut header, mut error, mut config, mut mac) = (None, None, None, None);
    let (mut payloads, mut unknown) = (Vec::new(), Vec::new());
    for (position, child) in top.children().enumerate() {
        let child = child?;
        if mac.is_some() {
            return Err(DecodeError::Misplaced {
                parent: p,
                tag: TAG_MAC,
                place: "last",
            });
        }
        match child.tag() {
            TAG_HEADER if position == 0 => header = Some(decode_header(&child)?),
            TAG_HEADER => {
                return Err(DecodeError::Misplaced {
                    parent: p,
                    tag: TAG_HEADER,
                    place: "first",
                });
            }
            TAG_PAYLOAD => tlv::push_limited(
                &mut payloads,
                P::decode(&child)?,
                "PDU payloads",
                MAX_PAYLOADS,
            )?,
            TAG_ERROR if p == TAG_AGGREGATOR_RESPONSE || p == TAG_EXTENDER_RESPONSE => {
                tlv::once(&mut error, p, TAG_ERROR, decode_error(&child)?)?;
            }
            TAG_CONFIG => {
                let elements = child
                    .children()
                    .map(|c| c.map(|c| c.to_owned_tlv()))
                    .collect::<Result<_, _>>()?;
                tlv::once(&mut config, p, TAG_CONFIG, elements)?;
            }
            TAG_ACK if p == TAG_AGGREGATOR_REQUEST || p == TAG_AGGREGATOR_RESPONSE => {
                unknown.push(child.to_owned_tlv());
            }
            TAG_MAC => mac = Some(child.as_imprint()?),
            _ => tlv::unknown(p, &child, &mut unknown)?,
        }
    }
    if error.is_none() {
        tlv::required(header.as_ref(), p, TAG_HEADER)?;
        tlv::required(mac.as_ref(), p, TAG_MAC)?;
    }
    Ok(Pdu {
        tag: p,
        header,
        payloads,
        error,
        config,
        unknown,
        mac,
        raw: bytes.to_vec(),
    })
}

fn decode_header(tlv: &TlvRef<'_>) -> Result<Header, DecodeError> {
    let (mut login_id, mut instance_id, mut message_id, mut unknown) =
        (None, None, None, Vec::new());
    for child in tlv.children() {
        let child = child?;
        match child.tag() {
            0x01 => tlv::once(&mut login_id, TAG_HEADER, 0x01, child.as_string()?)?,
            0x02 => tlv::once(&mut instance_id, TAG_HEADER, 0x02, child.as_u64()?)?,
            0x03 => tlv::once(&mut message_id, TAG_HEADER, 0x03, child.as_u64()?)?,
            _ => tlv::unknown(TAG_HEADER, &child, &mut unknown)?,
        }
    }
    Ok(Header {
        login_id: tlv::required(login_id, TAG_HEADER, 0x01)?,
        instance_id,
        message_id,
    })
}

fn decode_error(tlv: &TlvRef<'_>) -> Result<ServiceError, DecodeError> {
    let (mut status, mut message, mut unknown) = (None, None, Vec::new());
    for child in tlv.children() {
        let child = child?;
        match child.tag() {
            0x04 => tlv::once(&mut status, TAG_ERROR, 0x04, child.as_u64()?)?,
            0x05 => tlv::once(&mut message, TAG_ERROR, 0x05, child.as_string()?)?,
            _ => tlv::unknown(TAG_ERROR, &child, &mut unknown)?,
        }
    }
    Ok(ServiceError {
        status: tlv::required(status, TAG_ERROR, 0x04)?,
        message,
    })
}

// === payloads ===

impl Payload for ExtendRequest {
    const PDU_TAG: u16 = TAG_EXTENDER_REQUEST;
    const WHAT: &'static str = "extender request";

    fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        let (mut id, mut aggregation_time, mut publication_time, mut unknown) =
            (None, None, None, Vec::new());
        for child in tlv.children() {
            let child = child?;
            match child.tag() {
                0x01 => tlv::once(&mut id, TAG_PAYLOAD, 0x01, child.as_u64()?)?,
                0x02 => tlv::once(&mut aggregation_time, TAG_PAYLOAD, 0x02, child.as_u64()?)?,
                0x03 => tlv::once(&mut publication_time, TAG_PAYLOAD, 0x03, child.as_u64()?)?,
                _ => tlv::unknown(TAG_PAYLOAD, &child, &mut unknown)?,
            }
        }
        Ok(ExtendRequest {
            request_id: tlv::required(id, TAG_PAYLOAD, 0x01)?,
            aggregation_time: tlv::required(aggregation_time, TAG_PAYLOAD, 0x02)?,
            publication_time,
        })
    }

    fn encode(&self, out: &mut Encoder) -> Result<(), Error> {
        out.nested(TAG_PAYLOAD, Flags::NONE, |e| {
            e.u64(0x01, self.request_id)?;
            e.u64(0x02, self.aggregation_time)?;
            self.publication_time
                .map(|t| e.u64(0x03, t))
                .transpose()
                .map(|_| ())
        })
    }
}

impl Payload for ExtendResponse {
    const PDU_TAG: u16 = TAG_EXTENDER_RESPONSE;
    const WHAT: &'static str = "extender response";

    fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        let (mut id, mut status, mut message, mut last, mut chain) = (None, None, None, None, None);
        let mut unknown = Vec::new();
        for child in tlv.children() {
            let child = child?;
            match child.tag() {
                0x01 => tlv::once(&mut id, TAG_PAYLOAD, 0x01, child.as_u64()?)?,
                0x04 => tlv::once(&mut status, TAG_PAYLOAD, 0x04, child.as_u64()?)?,
                0x05 => tlv::once(&mut message, TAG_PAYLOAD, 0x05, child.as_string()?)?,
                0x12 => tlv::once(&mut last, TAG_PAYLOAD, 0x12, child.as_u64()?)?,
                TAG_CALENDAR_CHAIN => tlv::once(
                    &mut chain,
                    TAG_PAYLOAD,
                    TAG_CALENDAR_CHAIN,
                    CalendarChain::decode(&child)?,
                )?,
                _ => tlv::unknown(TAG_PAYLOAD, &child, &mut unknown)?,
            }
        }
        Ok(ExtendResponse {
            request_id: tlv::required(id, TAG_PAYLOAD, 0x01)?,
            status: tlv::required(status, TAG_PAYLOAD, 0x04)?,
            error_message: message,
            calendar_last: last,
            calendar_chain: chain,
        })
    }

    fn encode(&self, out: &mut Encoder) -> Result<(), Error> {
        out.nested(TAG_PAYLOAD, Flags::NONE, |e| {
            e.u64(0x01, self.request_id)?;
            e.u64(0x04, self.status)?;
            self.error_message
                .as_ref()
                .map(|m| e.string(0x05, m))
                .transpose()?;
            self.calendar_last.map(|t| e.u64(0x12, t)).transpose()?;
            self.calendar_chain
                .as_ref()
                .map(|c| c.encode(e))
                .transpose()
                .map(|_| ())
        })
    }
}

impl Payload for AggregationRequest {
    const PDU_TAG: u16 = TAG_AGGREGATOR_REQUEST;
    const WHAT: &'static str = "aggregator request";

    fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        let (mut id, mut hash, mut level, mut unknown) = (None, None, None, Vec::new());
        for child in tlv.children() {
            let child = child?;
            match child.tag() {
                0x01 => tlv::once(&mut id, TAG_PAYLOAD, 0x01, child.as_u64()?)?,
                0x02 => tlv::once(&mut hash, TAG_PAYLOAD, 0x02, child.as_imprint()?)?,
                0x03 => tlv::once(&mut level, TAG_PAYLOAD, 0x03, child.as_u64()?)?,
                _ => tlv::unknown(TAG_PAYLOAD, &child, &mut unknown)?,
            }
        }
        Ok(AggregationRequest {
            request_id: tlv::required(id, TAG_PAYLOAD, 0x01)?,
            hash: tlv::required(hash, TAG_PAYLOAD, 0x02)?,
            level,
        })
    }

    fn encode(&self, out: &mut Encoder) -> Result<(), Error> {
        out.nested(TAG_PAYLOAD, Flags::NONE, |e| {
            e.u64(0x01, self.request_id)?;
            e.imprint(0x02, &self.hash)?;
            self.level.map(|l| e.u64(0x03, l)).transpose().map(|_| ())
        })
    }
}

impl Payload for AggregationResponse {
    const PDU_TAG: u16 = TAG_AGGREGATOR_RESPONSE;
    const WHAT: &'static str = "aggregator response";

    fn decode(tlv: &TlvRef<'_>) -> Result<Self, DecodeError> {
        const P: u16 = TAG_PAYLOAD;
        let (mut id, mut status, mut message) = (None, None, None);
        let (mut calendar, mut publication, mut auth, mut rfc3161) = (None, None, None, None);
        let (mut chains, mut unknown) = (Vec::new(), Vec::new());
        for child in tlv.children() {
            let child = child?;
            let tag = child.tag();
            match tag {
                0x01 => tlv::once(&mut id, P, tag, child.as_u64()?)?,
                0x04 => tlv::once(&mut status, P, tag, child.as_u64()?)?,
                0x05 => tlv::once(&mut message, P, tag, child.as_string()?)?,
                TAG_AGGREGATION_CHAIN => tlv::push_limited(
                    &mut chains,
                    AggregationChain::decode(&child)?,
                    "aggregation chains",
                    crate::signature::MAX_AGGREGATION_CHAINS,
                )?,
                TAG_CALENDAR_CHAIN => {
                    tlv::once(&mut calendar, P, tag, CalendarChain::decode(&child)?)?
                }
                TAG_PUBLICATION_RECORD => {
                    tlv::once(&mut publication, P, tag, PublicationRecord::decode(&child)?)?
                }
                TAG_CALENDAR_AUTH_RECORD => {
                    tlv::once(&mut auth, P, tag, CalendarAuthRecord::decode(&child)?)?
                }
                TAG_RFC3161_RECORD => {
                    tlv::once(&mut rfc3161, P, tag, Rfc3161Record::decode(&child)?)?
                }
                _ => tlv::unknown(P, &child, &mut unknown)?,
            }
        }
        Ok(AggregationResponse {
            request_id: tlv::required(id, P, 0x01)?,
            status: tlv::required(status, P, 0x04)?,
            error_message: message,
            aggregation_chains: chains,
            calendar_chain: calendar,
            publication_record: publication,
            calendar_auth_record: auth,
            rfc3161_record: rfc3161,
        })
    }

    fn encode(&self, out: &mut Encoder) -> Result<(), Error> {
        out.nested(TAG_PAYLOAD, Flags::NONE, |e| {
            e.u64(0x01, self.request_id)?;
            e.u64(0x04, self.status)?;
            self.error_message
                .as_ref()
                .map(|m| e.string(0x05, m))
                .transpose()?;
            self.rfc3161_record
                .as_ref()
                .map(|r| r.encode(e))
                .transpose()?;
            self.aggregation_chains
                .iter()
                .try_for_each(|c| c.encode(e))?;
            self.calendar_chain
                .as_ref()
                .map(|c| c.encode(e))
                .transpose()?;
            self.publication_record
                .as_ref()
                .map(|r| r.encode(e, TAG_PUBLICATION_RECORD))
                .transpose()?;
            self.calendar_auth_record
                .as_ref()
                .map(|r| r.encode(e))
                .transpose()
                .map(|_| ())
        })
    }
}

impl AggregationResponse {
    /// Encodes a response payload whose signature is written by `signature`: its aggregation
    /// chains, calendar chain and publication or calendar authentication record, in signature
    /// order. The bytes are those of [`Payload::encode`] on the decoded equivalent; a service
    /// uses it to write the parts a round's requests share once, not once per request.
    ///
    /// # Errors
    ///
    /// Whatever `signature` returns; [`Error::Encode`] for oversized content.
    pub fn encode_signed(
        request_id: u64,
        out: &mut Encoder,
        signature: impl FnOnce(&mut Encoder) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.nested(TAG_PAYLOAD, Flags::NONE, |e| {
            e.u64(0x01, request_id)?;
            e.u64(0x04, 0)?;
            signature(e)
        })
    }
}

impl RequestId for ExtendRequest {
    fn request_id(&self) -> u64 {
        self.request_id
    }
}
impl RequestId for ExtendResponse {
    fn request_id(&self) -> u64 {
        self.request_id
    }
}
impl RequestId for AggregationRequest {
    fn request_id(&self) -> u64 {
        self.request_id
    }
}
impl RequestId for AggregationResponse {
    fn request_id(&self) -> u64 {
        self.request_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_is_openssls() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        assert!(hmac(HashAlgorithm::Sha256, b"", b"data").is_err());
        for key_len in [1usize, 4, 32, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..key_len).map(|i| i as u8 ^ 0xa5).collect();
            for len in [0usize, 1, 55, 64, 119, 3000] {
                let pkey = PKey::hmac(&key).unwrap();
                let mut signer = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
                signer.update(&data[..len]).unwrap();
                let expected = signer.sign_to_vec().unwrap();
                assert_eq!(
                    hmac_sha256(&key, &data[..len]),
                    expected,
                    "key {key_len}, data {len}"
                );
                assert_eq!(
                    hmac(HashAlgorithm::Sha256, &key, &data[..len]).unwrap(),
                    expected
                );
            }
        }
    }

    #[test]
    fn request_round_trip_and_mac() {
        let header = Header {
            login_id: "anon".into(),
            instance_id: Some(1),
            message_id: Some(2),
        };
        let request = ExtenderRequest::new(
            header,
            vec![ExtendRequest {
                request_id: 7,
                aggregation_time: 1_700_000_000,
                publication_time: None,
            }],
        );
        let bytes = request.encode(b"anon", HashAlgorithm::Sha256).unwrap();
        let back = ExtenderRequest::decode(&bytes).unwrap();
        back.check_mac(b"anon", HashAlgorithm::Sha256).unwrap();
        assert!(back.check_mac(b"nope", HashAlgorithm::Sha256).is_err());
        assert_eq!(back.payload(7).unwrap().aggregation_time, 1_700_000_000);
        assert_eq!(back.header, request.header);
    }

    #[test]
    fn mac_must_be_last() {
        let header = Header {
            login_id: "a".into(),
            instance_id: None,
            message_id: None,
        };
        let mut bytes = AggregatorRequest::new(header, vec![])
            .encode(b"k", HashAlgorithm::Sha256)
            .unwrap();
        // Append an element after the MAC and fix the outer length.
        bytes.extend_from_slice(&[0x02, 0x00]);
        let len = u16::try_from(bytes.len() - 4).unwrap().to_be_bytes();
        bytes[2] = len[0];
        bytes[3] = len[1];
        assert!(AggregatorRequest::decode(&bytes).is_err());
    }
}
