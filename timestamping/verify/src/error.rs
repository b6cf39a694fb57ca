//! The crate's one error type and its decoding detail.
//!
//! Variants are grouped by who has to act: the peer or file that sent bad bytes
//! ([`Error::Decode`]), the operator who supplied a trust anchor or key that does not fit
//! ([`Error::PublicationsFile`], [`Error::Mac`]), the environment ([`Error::Crypto`],
//! [`Error::HashUnavailable`]), the caller ([`Error::Encode`]) and us ([`Error::Unreachable`]).
//! A signature that decodes but does not verify is not an error: it is a
//! [`verify::Verdict`](crate::verify::Verdict) with a KSI code.

use crate::imprint::HashAlgorithm;

/// Errors from the KSI wire format, the publications file and the offline verifier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes from a client, a file or a service did not decode.
    #[error("malformed {what}: {source}")]
    Decode {
        /// What was being decoded, e.g. "KSI signature".
        what: &'static str,
        /// Why it did not decode.
        source: DecodeError,
    },
    /// A value built by the caller cannot be encoded (too long, or missing a mandatory part).
    #[error("cannot encode {what}: {why}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it cannot be encoded.
        why: &'static str,
    },
    /// The publications file is not signed by a trusted signer at the time it is judged.
    #[error("publications file not trusted at {at}: {why}")]
    PublicationsFile {
        /// The moment (seconds since 1970) the file's signature was judged at.
        at: i64,
        /// Why it is not trusted.
        why: String,
    },
    /// A PDU's HMAC does not match the shared key: wrong key, or the PDU was altered.
    #[error("{what}: HMAC does not match")]
    Mac {
        /// Which PDU.
        what: &'static str,
    },
    /// The service answered with a non-zero status.
    #[error("{what}: service status {status:#06x}: {message}")]
    Service {
        /// Which PDU.
        what: &'static str,
        /// The KSI status code.
        status: u64,
        /// The service's error message, if any.
        message: String,
    },
    /// The linked OpenSSL does not provide a hash function a signature uses.
    #[error("hash algorithm {0} is not available in the linked OpenSSL")]
    HashUnavailable(HashAlgorithm),
    /// OpenSSL failed where it should not have (memory, a broken installation).
    #[error("{what}: {source}")]
    Crypto {
        /// What was being done.
        what: &'static str,
        /// OpenSSL's error queue.
        source: openssl::error::ErrorStack,
    },
    /// A bug in this crate.
    #[error("internal error: {0} (please report this)")]
    Unreachable(&'static str),
}

impl Error {
    /// Wraps a [`DecodeError`] with what was being decoded.
    pub(crate) fn decode(what: &'static str) -> impl FnOnce(DecodeError) -> Error {
        move |source| Error::Decode { what, source }
    }

    /// Wraps an OpenSSL error with what was being done.
    pub(crate) fn crypto(what: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> Error {
        move |source| Error::Crypto { what, source }
    }
}

/// Why bytes did not decode. Tags are printed in hex, as the KSI specification writes them.
///
/// [`DecodeError::Truncated`] alone means "need more bytes"; every other variant means the bytes
/// are not valid and more of them will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends inside an element.
    #[error("need {needed} bytes, only {left} left")]
    Truncated {
        /// Bytes the element needs from where it starts.
        needed: usize,
        /// Bytes that are left.
        left: usize,
    },
    /// Bytes follow the element that should have been the last.
    #[error("{left} trailing bytes after the element")]
    TrailingBytes {
        /// How many bytes follow.
        left: usize,
    },
    /// An element expected at this place has another tag.
    #[error("expected element {expected:#x}, found {found:#x}")]
    UnexpectedTag {
        /// The tag the format requires.
        expected: u16,
        /// The tag found.
        found: u16,
    },
    /// A critical element that this implementation does not know.
    #[error("unknown critical element {tag:#x} in {parent:#x}")]
    UnknownCritical {
        /// The enclosing element.
        parent: u16,
        /// The unknown element.
        tag: u16,
    },
    /// A mandatory element is absent.
    #[error("element {parent:#x} lacks mandatory element {tag:#x}")]
    Missing {
        /// The enclosing element.
        parent: u16,
        /// The missing element.
        tag: u16,
    },
    /// An element that may appear once appears again.
    #[error("element {tag:#x} appears more than once in {parent:#x}")]
    Duplicate {
        /// The enclosing element.
        parent: u16,
        /// The repeated element.
        tag: u16,
    },
    /// Two elements that exclude each other both appear.
    #[error("elements {first:#x} and {second:#x} cannot both appear in {parent:#x}")]
    Conflict {
        /// The enclosing element.
        parent: u16,
        /// One element.
        first: u16,
        /// The other element.
        second: u16,
    },
    /// An element is not where the format puts it (first or last).
    #[error("element {tag:#x} must be {place} in {parent:#x}")]
    Misplaced {
        /// The enclosing element.
        parent: u16,
        /// The misplaced element.
        tag: u16,
        /// "first" or "last".
        place: &'static str,
    },
    /// An integer value is longer than its type allows.
    #[error("integer element {tag:#x} has {len} bytes, at most {max} allowed")]
    IntegerTooLong {
        /// The element.
        tag: u16,
        /// Its value length.
        len: usize,
        /// The most bytes allowed.
        max: usize,
    },
    /// A string value is empty or lacks its terminating zero byte.
    #[error("string element {tag:#x} is not terminated by a zero byte")]
    Unterminated {
        /// The element.
        tag: u16,
    },
    /// An imprint names a hash function this implementation does not know.
    #[error("unknown hash algorithm id {id:#04x}")]
    UnknownAlgorithm {
        /// The algorithm id.
        id: u8,
    },
    /// An imprint's digest length does not match its algorithm.
    #[error("imprint of {algorithm} has {len} digest bytes, {expected} expected")]
    ImprintLength {
        /// The algorithm named by the first byte.
        algorithm: HashAlgorithm,
        /// The digest bytes present.
        len: usize,
        /// The digest length of the algorithm.
        expected: usize,
    },
    /// A repeated element exceeds a named limit.
    #[error("{what}: {count} exceeds the limit of {max}")]
    TooMany {
        /// What is counted.
        what: &'static str,
        /// How many were found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An element's value breaks a rule of its own format.
    #[error("element {tag:#x}: {why}")]
    Invalid {
        /// The element.
        tag: u16,
        /// The rule broken.
        why: &'static str,
    },
    /// The input is larger than the limit for its kind.
    #[error("{what} is {len} bytes, at most {max} allowed")]
    TooLarge {
        /// What is measured.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A publication string is not base32 with a matching CRC-32.
    #[error("publication string: {0}")]
    PublicationString(&'static str),
    /// A publications file does not start with `KSIPUBLF`.
    #[error("publications file does not start with the magic bytes KSIPUBLF")]
    BadMagic,
}
