//! What gateways sign: a request descriptor (the client gateway signs it with its member's key)
//! and a response descriptor bound to its request by hash (the provider gateway signs it). The
//! bodies travel beside them and are bound by their SHA-512 digest.
//!
//! The encoding is binary and canonical, so the signed bytes are exactly what is logged and
//! checked years later (format in `docs/signed-messages.md`):
//!
//! ```text
//!  request  = "BBRQ" 01 str(message id) str(client) str(service) str(method) str(path) opt(query)
//!             opt(user id) opt(issue) opt(represented party) opt(data subject) opt(purpose of use)
//!             u64(created at, unix ms) digest(body SHA-512) headers
//!  response = "BBRS" 01 str(message id) digest(request hash) u16(status) u64(created at, unix ms)
//!             digest(body SHA-512) headers
//!  str      = u32 length (big-endian) then UTF-8 bytes;  opt = 00 | 01 str
//!  digest   = 64 bytes;  headers = u16 count, then (str(lower-case name) str(value)) in order
//! ```
//!
//! The request hash is `SHA-512(SHA-512(request descriptor) ‖ SHA-512(body))`, the shape PR-REST
//! gives for `X-Road-Request-Hash` (sent base64-encoded).
//!
//! Decoding is written by hand because the format is ours and small; every length is checked
//! before it is used, and the decoder never panics (fuzz target `signed_message`).

/// Magic of a request descriptor.
pub const REQUEST_MAGIC: [u8; 4] = *b"BBRQ";
/// Magic of a response descriptor.
pub const RESPONSE_MAGIC: [u8; 4] = *b"BBRS";
/// The encoding version.
pub const VERSION: u8 = 1;
/// Longest text field, in bytes: the message log's limit for its text fields
/// ([`crate::log::record::MAX_TEXT_LEN`]), so that whatever a gateway signs or accepts it can
/// also log — a request with a longer field is refused before anyone acts on it, never acted on
/// and then left unlogged.
pub const MAX_FIELD_LEN: usize = crate::log::record::MAX_TEXT_LEN;
/// Most headers carried.
pub const MAX_HEADERS: usize = 128;
/// Longest encoded descriptor.
pub const MAX_DESCRIPTOR_LEN: usize = 64 * 1024;
/// Length of a SHA-512 digest.
pub const DIGEST_LEN: usize = 64;

/// A SHA-512 digest.
pub type Digest512 = [u8; DIGEST_LEN];

/// The signed description of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestDescriptor {
    /// `X-Road-Id`.
    pub message_id: String,
    /// The client id.
    pub client: String,
    /// The service id.
    pub service: String,
    /// The HTTP method.
    pub method: String,
    /// The path after the service id, as sent.
    pub path: String,
    /// The query, as sent.
    pub query: Option<String>,
    /// `X-Road-UserId`.
    pub user_id: Option<String>,
    /// `X-Road-Issue`.
    pub issue: Option<String>,
    /// `X-Road-Represented-Party`.
    pub represented_party: Option<String>,
    /// The person the request concerns (health services).
    pub data_subject: Option<String>,
    /// The purpose of use (health services).
    pub purpose_of_use: Option<String>,
    /// When the client gateway made it, unix milliseconds.
    pub created_at_ms: u64,
    /// SHA-512 of the body (of the empty string when there is none).
    pub body_digest: Digest512,
    /// The end-to-end headers passed to the service, lower-case names, in order.
    pub headers: Vec<(String, String)>,
}

/// The signed description of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseDescriptor {
    /// The request's message id.
    pub message_id: String,
    /// The request hash ([`RequestDescriptor::request_hash`]).
    pub request_hash: Digest512,
    /// The service's HTTP status.
    pub status: u16,
    /// When the provider gateway made it, unix milliseconds.
    pub created_at_ms: u64,
    /// SHA-512 of the response body.
    pub body_digest: Digest512,
    /// The end-to-end response headers, lower-case names, in order.
    pub headers: Vec<(String, String)>,
}

/// Why bytes are not a descriptor.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Over [`MAX_DESCRIPTOR_LEN`].
    #[error("descriptor of {0} bytes is over the limit of {MAX_DESCRIPTOR_LEN}")]
    TooLong(usize),
    /// Wrong magic or version.
    #[error("not a {0} descriptor of version {VERSION}")]
    NotDescriptor(&'static str),
    /// Ends inside `field`.
    #[error("truncated in {0}")]
    Truncated(&'static str),
    /// A field breaks its limits.
    #[error("{field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Bytes after the last field.
    #[error("{0} bytes after the descriptor")]
    Trailing(usize),
}

/// Why a descriptor cannot be encoded (a field over its limit).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode {field}: {reason}")]
pub struct EncodeError {
    /// Which field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

/// SHA-512 of `bytes`.
///
/// Computed with ring (OpenSSL's assembly, faster than the `sha2` crate's): each exchange hashes
/// every body on both gateways.
pub fn sha512(bytes: &[u8]) -> Digest512 {
    let digest = ring::digest::digest(&ring::digest::SHA512, bytes);
    let mut out = [0; DIGEST_LEN];
    out.copy_from_slice(digest.as_ref());
    out
}

// === impl RequestDescriptor ===

impl RequestDescriptor {
    /// The canonical bytes that are signed.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when a field is over its limit.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new(REQUEST_MAGIC);
        w.str("message id", &self.message_id)?;
        w.str("client", &self.client)?;
        w.str("service", &self.service)?;
        w.str("method", &self.method)?;
        w.str("path", &self.path)?;
        w.opt("query", self.query.as_deref())?;
        w.opt("user id", self.user_id.as_deref())?;
        w.opt("issue", self.issue.as_deref())?;
        w.opt("represented party", self.represented_party.as_deref())?;
        w.opt("data subject", self.data_subject.as_deref())?;
        w.opt("purpose of use", self.purpose_of_use.as_deref())?;
        w.u64(self.created_at_ms);
        w.bytes(&self.body_digest);
        w.headers(&self.headers)?;
        w.finish()
    }

    /// Decodes the canonical bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, REQUEST_MAGIC, "request")?;
        let descriptor = RequestDescriptor {
            message_id: r.str("message id")?,
            client: r.str("client")?,
            service: r.str("service")?,
            method: r.str("method")?,
            path: r.str("path")?,
            query: r.opt("query")?,
            user_id: r.opt("user id")?,
            issue: r.opt("issue")?,
            represented_party: r.opt("represented party")?,
            data_subject: r.opt("data subject")?,
            purpose_of_use: r.opt("purpose of use")?,
            created_at_ms: r.u64("created at")?,
            body_digest: r.digest("body digest")?,
            headers: r.headers()?,
        };
        r.end()?;
        Ok(descriptor)
    }

    /// `SHA-512(SHA-512(encoded descriptor) ‖ body digest)`: what the response is bound to.
    ///
    /// # Errors
    ///
    /// As [`RequestDescriptor::encode`].
    pub fn request_hash(&self) -> Result<Digest512, EncodeError> {
        let mut both = [0; 2 * DIGEST_LEN];
        let (descriptor, body) = both.split_at_mut(DIGEST_LEN);
        descriptor.copy_from_slice(&sha512(&self.encode()?));
        body.copy_from_slice(&self.body_digest);
        Ok(sha512(&both))
    }
}

// === impl ResponseDescriptor ===

impl ResponseDescriptor {
    /// The canonical bytes that are signed.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when a field is over its limit.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new(RESPONSE_MAGIC);
        w.str("message id", &self.message_id)?;
        w.bytes(&self.request_hash);
        w.bytes(&self.status.to_be_bytes());
        w.u64(self.created_at_ms);
        w.bytes(&self.body_digest);
        w.headers(&self.headers)?;
        w.finish()
    }

    /// Decodes the canonical bytes.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the field.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, RESPONSE_MAGIC, "response")?;
        let descriptor = ResponseDescriptor {
            message_id: r.str("message id")?,
            request_hash: r.digest("request hash")?,
            status: r.u16("status")?,
            created_at_ms: r.u64("created at")?,
            body_digest: r.digest("body digest")?,
            headers: r.headers()?,
        };
        if !(100..=599).contains(&descriptor.status) {
            return Err(DecodeError::Invalid {
                field: "status",
                reason: format!("{} is not an HTTP status", descriptor.status),
            });
        }
        r.end()?;
        Ok(descriptor)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(magic: [u8; 4]) -> Self {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&magic);
        out.push(VERSION);
        Writer(out)
    }

    fn str(&mut self, field: &'static str, text: &str) -> Result<(), EncodeError> {
        if text.len() > MAX_FIELD_LEN {
            return Err(EncodeError {
                field,
                reason: format!("{} bytes, over the limit of {MAX_FIELD_LEN}", text.len()),
            });
        }
        let len = u32::try_from(text.len()).map_err(|_| EncodeError {
            field,
            reason: "too long".into(),
        })?;
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }

    fn opt(&mut self, field: &'static str, text: Option<&str>) -> Result<(), EncodeError> {
        match text {
            None => {
                self.0.push(0);
                Ok(())
            }
            Some(text) => {
                self.0.push(1);
                self.str(field, text)
            }
        }
    }

    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn headers(&mut self, headers: &[(String, String)]) -> Result<(), EncodeError> {
        let count = u16::try_from(headers.len())
            .ok()
            .filter(|n| usize::from(*n) <= MAX_HEADERS)
            .ok_or_else(|| EncodeError {
                field: "headers",
                reason: format!("{} headers, over the limit of {MAX_HEADERS}", headers.len()),
            })?;
        self.0.extend_from_slice(&count.to_be_bytes());
        for (name, value) in headers {
            self.str("header name", name)?;
            self.str("header value", value)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>, EncodeError> {
        if self.0.len() > MAX_DESCRIPTOR_LEN {
            return Err(EncodeError {
                field: "descriptor",
                reason: format!(
                    "{} bytes, over the limit of {MAX_DESCRIPTOR_LEN}",
                    self.0.len()
                ),
            });
        }
        Ok(self.0)
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], magic: [u8; 4], kind: &'static str) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_DESCRIPTOR_LEN {
            return Err(DecodeError::TooLong(bytes.len()));
        }
        let (head, rest) = bytes
            .split_at_checked(5)
            .ok_or(DecodeError::NotDescriptor(kind))?;
        if head.get(..4) != Some(&magic[..]) || head.get(4) != Some(&VERSION) {
            return Err(DecodeError::NotDescriptor(kind));
        }
        Ok(Reader { rest })
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let (taken, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or(DecodeError::Truncated(field))?;
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        self.take(N, field)?
            .try_into()
            .map_err(|_| DecodeError::Truncated(field))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn digest(&mut self, field: &'static str) -> Result<Digest512, DecodeError> {
        self.array(field)
    }

    fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::try_from(u32::from_be_bytes(self.array(field)?))
            .map_err(|_| DecodeError::Truncated(field))?;
        if len > MAX_FIELD_LEN {
            return Err(DecodeError::Invalid {
                field,
                reason: format!("{len} bytes, over the limit of {MAX_FIELD_LEN}"),
            });
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid {
            field,
            reason: "not UTF-8".into(),
        })
    }

    fn opt(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.take(1, field)? {
            [0] => Ok(None),
            [1] => self.str(field).map(Some),
            _ => Err(DecodeError::Invalid {
                field,
                reason: "presence flag is neither 0 nor 1".into(),
            }),
        }
    }

    fn headers(&mut self) -> Result<Vec<(String, String)>, DecodeError> {
        let count = usize::from(self.u16("headers")?);
        if count > MAX_HEADERS {
            return Err(DecodeError::Invalid {
                field: "headers",
                reason: format!("{count} headers, over the limit of {MAX_HEADERS}"),
            });
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let name = self.str("header name")?;
            if name.is_empty()
                || name.bytes().any(|b| {
                    !(b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b"-_.!#$%&'*+^`|~".contains(&b))
                })
            {
                return Err(DecodeError::Invalid {
                    field: "header name",
                    reason: "not a lower-case HTTP token".into(),
                });
            }
            headers.push((name, self.str("header value")?));
        }
        Ok(headers)
    }

    fn end(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.rest.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RequestDescriptor {
        RequestDescriptor {
            message_id: "fa2e18a5-c2cb-4d09-b994-f57727f7c3fb".into(),
            client: "EE/GOV/70000001/ehr".into(),
            service: "EE/COM/10000001/pharmacy/prescriptions".into(),
            method: "GET".into(),
            path: "/v1/prescriptions".into(),
            query: Some("status=active".into()),
            user_id: Some("EE38001085718".into()),
            issue: None,
            represented_party: None,
            data_subject: Some("EE49002124277".into()),
            purpose_of_use: Some("TREAT".into()),
            created_at_ms: 1_795_694_400_123,
            body_digest: sha512(b""),
            headers: vec![("accept".into(), "application/fhir+json".into())],
        }
    }

    #[test]
    fn round_trips_and_every_truncation_or_flip_is_an_error_not_a_panic() {
        let original = request();
        let bytes = original.encode().unwrap();
        assert_eq!(RequestDescriptor::decode(&bytes).unwrap(), original);
        for n in 0..bytes.len() {
            assert!(
                RequestDescriptor::decode(&bytes[..n]).is_err(),
                "truncated at {n}"
            );
        }
        for n in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[n] ^= 0x01;
            // Either refused, or a different descriptor: never the same one.
            if let Ok(other) = RequestDescriptor::decode(&flipped) {
                assert_ne!(other, original, "flip at {n}");
            }
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            RequestDescriptor::decode(&trailing),
            Err(DecodeError::Trailing(1))
        );
        assert!(matches!(
            ResponseDescriptor::decode(&bytes),
            Err(DecodeError::NotDescriptor("response"))
        ));
    }

    #[test]
    fn the_response_is_bound_to_its_request() {
        let request = request();
        let hash = request.request_hash().unwrap();
        let response = ResponseDescriptor {
            message_id: request.message_id.clone(),
            request_hash: hash,
            status: 200,
            created_at_ms: request.created_at_ms + 5,
            body_digest: sha512(b"{\"resourceType\":\"Bundle\"}"),
            headers: vec![("content-type".into(), "application/fhir+json".into())],
        };
        let bytes = response.encode().unwrap();
        assert_eq!(ResponseDescriptor::decode(&bytes).unwrap(), response);
        let mut other = request.clone();
        other.data_subject = Some("EE38001085718".into());
        assert_ne!(
            other.request_hash().unwrap(),
            hash,
            "another person's request has another hash"
        );
        let mut bad_status = response.clone();
        bad_status.status = 42;
        assert!(matches!(
            ResponseDescriptor::decode(&bad_status.encode().unwrap()),
            Err(DecodeError::Invalid {
                field: "status",
                ..
            })
        ));
    }

    #[test]
    fn limits_are_enforced_both_ways() {
        let mut big = request();
        big.path = "p".repeat(MAX_FIELD_LEN + 1);
        assert_eq!(big.encode().unwrap_err().field, "path");
        let mut many = request();
        many.headers = (0..=MAX_HEADERS)
            .map(|n| (format!("x-h{n}"), "v".into()))
            .collect();
        assert_eq!(many.encode().unwrap_err().field, "headers");
        // What the log cannot hold, a gateway neither signs nor accepts.
        let mut user = request();
        user.user_id = Some("u".repeat(crate::log::record::MAX_TEXT_LEN + 1));
        assert_eq!(user.encode().unwrap_err().field, "user id");
        let mut at_limit = request();
        at_limit.user_id = Some("u".repeat(crate::log::record::MAX_TEXT_LEN));
        assert!(RequestDescriptor::decode(&at_limit.encode().unwrap()).is_ok());
        let mut upper = request();
        upper.headers = vec![("Accept".into(), "x".into())];
        assert!(matches!(
            RequestDescriptor::decode(&upper.encode().unwrap()),
            Err(DecodeError::Invalid {
                field: "header name",
                ..
            })
        ));
        assert!(matches!(
            RequestDescriptor::decode(&vec![0; MAX_DESCRIPTOR_LEN + 1]),
            Err(DecodeError::TooLong(_))
        ));
    }
}
