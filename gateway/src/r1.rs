//! The client interface: the X-Road Message Protocol for REST, version r1 (PR-REST 1.0), plus the
//! health extension, as pure code: request target, headers, filtering. No I/O.
//!
//! ```text
//!  {METHOD} /r1/{INSTANCE}/{CLASS}/{MEMBER}/{SUBSYSTEM}/{SERVICECODE}[/path][?query]
//!  X-Road-Client: INSTANCE/CLASS/MEMBER[/SUBSYSTEM]          (mandatory)
//!  X-Road-Id, X-Road-UserId, X-Road-Issue, X-Road-Represented-Party, X-Road-Security-Server
//!  X-Backbone-Data-Subject: EE38001085718                     (health services: mandatory)
//!  X-Backbone-Purpose-Of-Use: TREAT                           (health services: mandatory)
//! ```
//!
//! Every identifier part is percent-decoded on its own (PR-REST §4.2) and then checked against
//! the X-Road identifier rules (`backbone_registry::id`). The rest of the path goes to the
//! provider's service under one rule on both sides ([`normalize_path`]): each segment decoded
//! once, dot segments, empty segments and control characters refused, and re-encoded one way,
//! so that access rights match what is forwarded and the service's base path cannot be left.
//! Repeated X-Road headers are refused (HTTP parameter pollution).

use std::fmt;
use std::str::FromStr;

use backbone_registry::id::{ClientId, GatewayId, ServiceId, SubsystemId};
use http::HeaderMap;
use http::header::{self, HeaderName};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::fault::{Code, Fault};

/// The protocol version segment.
pub const PROTOCOL_VERSION: &str = "r1";
/// Longest request target (path and query) accepted. PR-REST §4.2 allows a limit; clients
/// commonly stop at 2,000 characters, so twice that leaves room without inviting abuse.
pub const MAX_TARGET_LEN: usize = 4096;
/// Longest value of one X-Road or health header.
pub const MAX_HEADER_VALUE_LEN: usize = 1024;

/// `X-Road-Client`.
pub const X_ROAD_CLIENT: &str = "x-road-client";
/// `X-Road-Id`.
pub const X_ROAD_ID: &str = "x-road-id";
/// `X-Road-UserId`.
pub const X_ROAD_USER_ID: &str = "x-road-userid";
/// `X-Road-Issue`.
pub const X_ROAD_ISSUE: &str = "x-road-issue";
/// `X-Road-Represented-Party`.
pub const X_ROAD_REPRESENTED_PARTY: &str = "x-road-represented-party";
/// `X-Road-Security-Server`: the provider gateway the caller wants.
pub const X_ROAD_SECURITY_SERVER: &str = "x-road-security-server";
/// `X-Road-Service` (responses).
pub const X_ROAD_SERVICE: &str = "x-road-service";
/// `X-Road-Request-Id` (responses).
pub const X_ROAD_REQUEST_ID: &str = "x-road-request-id";
/// `X-Road-Request-Hash` (responses).
pub const X_ROAD_REQUEST_HASH: &str = "x-road-request-hash";
/// The person whose health data the request concerns: a two-letter country code and their
/// national identifier, e.g. `EE38001085718`.
pub const X_BACKBONE_DATA_SUBJECT: &str = "x-backbone-data-subject";
/// Why the data is requested: an HL7 v3 PurposeOfUse code, e.g. `TREAT`, `ETREAT`.
pub const X_BACKBONE_PURPOSE_OF_USE: &str = "x-backbone-purpose-of-use";

/// Headers never passed on: hop-by-hop (RFC 9110 §7.6.1), those that leak the origin host, and
/// those the gateways set themselves (PR-REST §4.3 "filtered headers" and "specially handled").
const FILTERED: [&str; 14] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "user-agent",
    "server",
    "content-length",
    "expect",
];

/// The HL7 v3 PurposeOfUse codes (value set 2.16.840.1.113883.1.11.20448) a request may carry.
pub const PURPOSES_OF_USE: [&str; 58] = [
    "HMARKT",
    "HOPERAT",
    "CAREMGT",
    "DONAT",
    "FRAUD",
    "GOV",
    "HACCRED",
    "HCOMPL",
    "HDECD",
    "HDIRECT",
    "HDM",
    "HLEGAL",
    "HOUTCOMS",
    "HPRGRP",
    "HQUALIMP",
    "HSYSADMIN",
    "LABELING",
    "METAMGT",
    "MEMADMIN",
    "MILCDM",
    "PATADMIN",
    "PATSFTY",
    "PERFMSR",
    "RECORDMGT",
    "SYSDEV",
    "HTEST",
    "TRAIN",
    "HPAYMT",
    "CLMATTCH",
    "COVAUTH",
    "COVERAGE",
    "ELIGDTRM",
    "ELIGVER",
    "ENROLLM",
    "MILDCRG",
    "REMITADV",
    "HRESCH",
    "BIORCH",
    "CLINTRCH",
    "CLINTRCHNPC",
    "CLINTRCHPC",
    "PRECLINTRCH",
    "DSRCH",
    "POARCH",
    "TRANSRCH",
    "PATRQT",
    "FAMRQT",
    "PWATRNY",
    "SUPNWK",
    "PUBHLTH",
    "DISASTER",
    "THREAT",
    "TREAT",
    "CLINTRL",
    "COC",
    "ETREAT",
    "BTG",
    "POPHLTH",
];

/// What the request line names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The service called.
    pub service: ServiceId,
    /// The path after the service code, `""` or starting with `/`, normalised by
    /// [`normalize_path`] (each segment decoded once and re-encoded one way).
    pub path: String,
    /// The query string without `?`, exactly as sent.
    pub query: Option<String>,
}

/// The person a health request concerns.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DataSubject(String);

/// The purpose of use of a health request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PurposeOfUse(&'static str);

/// The X-Road and health headers of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHeaders {
    /// `X-Road-Client`.
    pub client: ClientId,
    /// `X-Road-Id`, if the caller sent one.
    pub id: Option<String>,
    /// `X-Road-UserId`.
    pub user_id: Option<String>,
    /// `X-Road-Issue`.
    pub issue: Option<String>,
    /// `X-Road-Represented-Party`.
    pub represented_party: Option<String>,
    /// `X-Road-Security-Server`.
    pub security_server: Option<GatewayId>,
    /// `X-Backbone-Data-Subject`.
    pub data_subject: Option<DataSubject>,
    /// `X-Backbone-Purpose-Of-Use`.
    pub purpose_of_use: Option<PurposeOfUse>,
}

/// Why a request does not follow the protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The target is longer than [`MAX_TARGET_LEN`].
    #[error("the request target is {0} bytes, over the limit of {MAX_TARGET_LEN}")]
    TargetTooLong(usize),
    /// Not `/r1/...`.
    #[error("the path must start with /{PROTOCOL_VERSION}/ followed by the service id")]
    NotR1,
    /// The service id in the path is not valid.
    #[error("invalid service id in the path: {0}")]
    InvalidService(String),
    /// A segment of the path after the service id is not acceptable.
    #[error(
        "invalid path segment {0:?}: '.' and '..', control characters and backslashes are refused"
    )]
    InvalidPath(String),
    /// `X-Road-Client` is missing.
    #[error("the X-Road-Client header is mandatory")]
    MissingClient,
    /// `X-Road-Client` is not a member or subsystem id.
    #[error("invalid X-Road-Client: {0}")]
    InvalidClient(String),
    /// A header is repeated, too long, or not text.
    #[error("invalid {name} header: {reason}")]
    InvalidHeader {
        /// The header.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// A health service without its data subject or purpose of use.
    #[error("{0}")]
    MissingHealthContext(String),
}

// === impl RequestError ===

impl RequestError {
    /// The protocol error for this request, tagged with its message id.
    pub fn fault(&self, message_id: &str) -> Fault {
        let code = match self {
            RequestError::MissingClient | RequestError::InvalidClient(_) => {
                Code::InvalidClientIdentifier
            }
            RequestError::InvalidService(_) => Code::InvalidServiceIdentifier,
            RequestError::MissingHealthContext(_) => Code::MissingHealthContext,
            RequestError::TargetTooLong(_)
            | RequestError::NotR1
            | RequestError::InvalidPath(_)
            | RequestError::InvalidHeader { .. } => Code::BadRequest,
        };
        Fault::client(code, self.to_string(), message_id)
    }
}

/// Parses the request target (`/r1/...` with its query).
///
/// # Errors
///
/// [`RequestError`] naming what is wrong.
pub fn parse_target(path_and_query: &str) -> Result<Target, RequestError> {
    if path_and_query.len() > MAX_TARGET_LEN {
        return Err(RequestError::TargetTooLong(path_and_query.len()));
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (path_and_query, None),
    };
    let rest = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(PROTOCOL_VERSION))
        .and_then(|p| p.strip_prefix('/'))
        .ok_or(RequestError::NotR1)?;
    let mut segments = rest.splitn(6, '/');
    let mut parts = Vec::with_capacity(5);
    for _ in 0..5 {
        let raw = segments.next().ok_or_else(|| {
            RequestError::InvalidService(
                "expected INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICECODE".to_owned(),
            )
        })?;
        parts.push(decode(raw).ok_or_else(|| {
            RequestError::InvalidService(format!("{raw:?} is not percent-encoded UTF-8"))
        })?);
    }
    let remainder = segments.next().map(|r| format!("/{r}")).unwrap_or_default();
    let service = service_id(&parts).map_err(|e| RequestError::InvalidService(e.to_string()))?;
    let path = normalize_path(&remainder)?;
    Ok(Target {
        service,
        path,
        query,
    })
}

/// The one path rule, applied by the client gateway to an information system's request and by
/// the provider gateway, again, to every peer's signed request: each segment is percent-decoded
/// once and refused if it is empty (but for one trailing empty segment: `/a/`), if splitting it
/// on `/` or `\` yields `.` or `..` (so `..%2Fsecret` is refused and `c%2Fd` passes), if it holds
/// a control character, or if it is not UTF-8. The result is the path re-encoded the one way
/// ([`PATH_SEGMENT`]): access rights are matched against it, it is signed, and it is what the
/// provider appends under its service's base path, so the three can never disagree.
///
/// # Errors
///
/// [`RequestError::InvalidPath`] naming the segment as sent.
pub fn normalize_path(path: &str) -> Result<String, RequestError> {
    if path.is_empty() {
        return Ok(String::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| RequestError::InvalidPath(path.chars().take(64).collect()))?;
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut normalized = String::with_capacity(path.len());
    for (n, segment) in segments.iter().enumerate() {
        let refused = || RequestError::InvalidPath(segment.chars().take(64).collect());
        let decoded = decode(segment).ok_or_else(refused)?;
        let dots = decoded
            .split(['/', '\\'])
            .any(|part| part == "." || part == "..");
        if (decoded.is_empty() && n != last) || dots || decoded.chars().any(char::is_control) {
            return Err(refused());
        }
        normalized.push('/');
        normalized.extend(utf8_percent_encode(&decoded, PATH_SEGMENT));
    }
    Ok(normalized)
}

/// What a path segment keeps unencoded: RFC 3986 `pchar` (unreserved, sub-delims, `:` and `@`).
/// Everything else, `/`, `\`, `%`, `?` and `#` included, is percent-encoded.
pub const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

fn service_id(parts: &[String]) -> Result<ServiceId, backbone_registry::Error> {
    let joined = parts.get(..4).map(|p| p.join("/")).unwrap_or_default();
    let subsystem = SubsystemId::from_str(&joined)?;
    ServiceId::new(subsystem, parts.get(4).cloned().unwrap_or_default(), None)
}

fn decode(raw: &str) -> Option<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Parses the X-Road and health headers.
///
/// # Errors
///
/// [`RequestError`] naming the header and what is wrong.
pub fn parse_headers(headers: &HeaderMap) -> Result<ClientHeaders, RequestError> {
    let client = single(headers, X_ROAD_CLIENT)?.ok_or(RequestError::MissingClient)?;
    let client = decoded_id::<ClientId>(&client).map_err(RequestError::InvalidClient)?;
    let security_server =
        match single(headers, X_ROAD_SECURITY_SERVER)? {
            Some(text) => Some(decoded_id::<GatewayId>(&text).map_err(|reason| {
                RequestError::InvalidHeader {
                    name: "X-Road-Security-Server",
                    reason,
                }
            })?),
            None => None,
        };
    let data_subject = match single(headers, X_BACKBONE_DATA_SUBJECT)? {
        Some(text) => {
            Some(
                text.parse::<DataSubject>()
                    .map_err(|reason| RequestError::InvalidHeader {
                        name: "X-Backbone-Data-Subject",
                        reason,
                    })?,
            )
        }
        None => None,
    };
    let purpose_of_use =
        match single(headers, X_BACKBONE_PURPOSE_OF_USE)? {
            Some(text) => Some(text.parse::<PurposeOfUse>().map_err(|reason| {
                RequestError::InvalidHeader {
                    name: "X-Backbone-Purpose-Of-Use",
                    reason,
                }
            })?),
            None => None,
        };
    Ok(ClientHeaders {
        client,
        id: single(headers, X_ROAD_ID)?,
        user_id: single(headers, X_ROAD_USER_ID)?,
        issue: single(headers, X_ROAD_ISSUE)?,
        represented_party: single(headers, X_ROAD_REPRESENTED_PARTY)?,
        security_server,
        data_subject,
        purpose_of_use,
    })
}

/// The value of a header that may appear at most once, as text within the length limit.
fn single(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, RequestError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |reason: &str| RequestError::InvalidHeader {
        name: display_name(name),
        reason: reason.to_owned(),
    };
    if values.next().is_some() {
        return Err(invalid("given more than once"));
    }
    if value.len() > MAX_HEADER_VALUE_LEN {
        return Err(invalid(&format!(
            "{} bytes, over the limit of {MAX_HEADER_VALUE_LEN}",
            value.len()
        )));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid("not visible ASCII"))?
        .trim();
    if text.is_empty() {
        return Err(invalid("empty"));
    }
    Ok(Some(text.to_owned()))
}

fn display_name(name: &'static str) -> &'static str {
    match name {
        X_ROAD_CLIENT => "X-Road-Client",
        X_ROAD_ID => "X-Road-Id",
        X_ROAD_USER_ID => "X-Road-UserId",
        X_ROAD_ISSUE => "X-Road-Issue",
        X_ROAD_REPRESENTED_PARTY => "X-Road-Represented-Party",
        X_ROAD_SECURITY_SERVER => "X-Road-Security-Server",
        X_BACKBONE_DATA_SUBJECT => "X-Backbone-Data-Subject",
        X_BACKBONE_PURPOSE_OF_USE => "X-Backbone-Purpose-Of-Use",
        other => other,
    }
}

/// An identifier whose `/`-separated parts are each percent-encoded UTF-8.
fn decoded_id<T: FromStr<Err = backbone_registry::Error>>(text: &str) -> Result<T, String> {
    let parts: Option<Vec<String>> = text.split('/').map(decode).collect();
    let parts = parts.ok_or_else(|| format!("{text:?} is not percent-encoded UTF-8"))?;
    parts.join("/").parse::<T>().map_err(|e| e.to_string())
}

/// The protocol's own headers (PR-REST §4.3, §4.4), which only the gateways set.
pub const PROTOCOL_HEADERS: [&str; 10] = [
    X_ROAD_CLIENT,
    X_ROAD_ID,
    X_ROAD_USER_ID,
    X_ROAD_ISSUE,
    X_ROAD_SERVICE,
    X_ROAD_REQUEST_ID,
    X_ROAD_REQUEST_HASH,
    X_ROAD_REPRESENTED_PARTY,
    X_ROAD_SECURITY_SERVER,
    crate::fault::X_ROAD_ERROR,
];

/// The one header rule, both sides: whether a header (lower-case name) never passes end to end —
/// hop-by-hop and framing headers, `Host`, the protocol's own headers and every `X-Backbone-*`.
/// Such a header is dropped from what an information system or a local service sends (the
/// gateways set their own), and refused in a peer's signed request. Other `X-Road-*` extension
/// headers, user-defined headers and `Authorization` pass unmodified (PR-REST §4.3, §4.7).
pub fn is_reserved(name: &str) -> bool {
    FILTERED.contains(&name) || PROTOCOL_HEADERS.contains(&name) || name.starts_with("x-backbone-")
}

/// The headers passed on end to end: everything but the reserved ones ([`is_reserved`]) and the
/// headers named in `Connection`.
pub fn end_to_end_headers(headers: &HeaderMap) -> Vec<(HeaderName, http::HeaderValue)> {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !is_reserved(name) && !listed.iter().any(|l| l == name)
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// A new message id: a random (version 4) UUID, as PR-REST recommends.
pub fn new_message_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // The system's random source failing is not recoverable; an all-zero id would still be
    // refused as a replay by the provider, never accepted twice.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut id = String::with_capacity(36);
    for (n, b) in bytes.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        for nibble in [b >> 4, b & 0x0f] {
            id.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    id
}

// === impl DataSubject ===

impl DataSubject {
    /// The identifier as sent, e.g. `EE38001085718`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DataSubject {
    type Err = String;

    /// Two upper-case letters (the ISO 3166 country), then 1 to 32 letters, digits or `-`;
    /// for `EE`, an Estonian personal code with a correct check digit.
    fn from_str(s: &str) -> Result<Self, String> {
        let country = s
            .get(..2)
            .filter(|c| c.bytes().all(|b| b.is_ascii_uppercase()))
            .ok_or("must start with a two-letter country code")?;
        let code = s.get(2..).unwrap_or_default();
        if code.is_empty()
            || code.len() > 32
            || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(
                "the national identifier must be 1 to 32 letters, digits or '-'".to_owned(),
            );
        }
        if country == "EE" && !estonian_personal_code(code) {
            return Err(
                "not a valid Estonian personal code (11 digits with a correct check digit)"
                    .to_owned(),
            );
        }
        Ok(DataSubject(s.to_owned()))
    }
}

impl fmt::Display for DataSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Estonian personal code (isikukood) check digit: weights 1..9,1 then 3..9,1,2,3.
fn estonian_personal_code(code: &str) -> bool {
    let digits: Vec<u32> = code.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 11 || code.len() != 11 {
        return false;
    }
    let weighted =
        |weights: [u32; 10]| digits.iter().zip(weights).map(|(d, w)| d * w).sum::<u32>() % 11;
    let mut check = weighted([1, 2, 3, 4, 5, 6, 7, 8, 9, 1]);
    if check == 10 {
        check = weighted([3, 4, 5, 6, 7, 8, 9, 1, 2, 3]);
        if check == 10 {
            check = 0;
        }
    }
    digits.get(10) == Some(&check)
}

// === impl PurposeOfUse ===

impl PurposeOfUse {
    /// The code.
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// Whether this is emergency access (`ETREAT`, emergency treatment, or `BTG`, break the
    /// glass): allowed without the usual relationship, and shown to the person as such.
    pub fn is_emergency(self) -> bool {
        matches!(self.0, "ETREAT" | "BTG")
    }
}

impl FromStr for PurposeOfUse {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        PURPOSES_OF_USE
            .iter()
            .find(|code| **code == s)
            .map(|code| PurposeOfUse(code))
            .ok_or_else(|| {
                format!(
                    "{:?} is not an HL7 v3 PurposeOfUse code (e.g. TREAT, ETREAT, HPAYMT, PUBHLTH)",
                    s.chars().take(40).collect::<String>()
                )
            })
    }
}

impl fmt::Display for PurposeOfUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

// === impl ClientHeaders ===

impl ClientHeaders {
    /// For a service that carries personal health data: both the data subject and the purpose
    /// of use, or the error that refuses the request.
    ///
    /// # Errors
    ///
    /// [`RequestError::MissingHealthContext`] naming what is missing.
    pub fn health_context(&self) -> Result<(&DataSubject, PurposeOfUse), RequestError> {
        match (&self.data_subject, self.purpose_of_use) {
            (Some(subject), Some(purpose)) => Ok((subject, purpose)),
            (None, _) => Err(RequestError::MissingHealthContext(
                "this service carries personal health data: the X-Backbone-Data-Subject header (e.g. EE38001085718) is mandatory".to_owned(),
            )),
            (_, None) => Err(RequestError::MissingHealthContext(
                "this service carries personal health data: the X-Backbone-Purpose-Of-Use header (an HL7 PurposeOfUse code, e.g. TREAT) is mandatory".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
