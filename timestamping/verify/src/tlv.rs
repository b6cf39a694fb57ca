//! KSI TLV: the type-length-value encoding every KSI structure is made of.
//!
//! Spec: Guardtime, "KSI Data Formats", section "TLV encoding" (as implemented by
//! guardtime/libksi `src/ksi/tlv.c` and guardtime/goksi `tlv/`).
//!
//! ```text
//!  TLV8  (tag < 0x20, length < 0x100)      TLV16 (tag < 0x2000, length < 0x10000)
//!  +-+-+-+---------+--------+-------        +-+-+-+---------+--------+--------+--------+-------
//!  |0|N|F| tag(5)  | len(8) | value         |1|N|F| tag(13)          |     len(16)     | value
//!  +-+-+-+---------+--------+-------        +-+-+-+---------+--------+--------+--------+-------
//!  N = non-critical: a reader that does not know the tag may ignore it
//!  F = forward: a reader that does not know the tag should pass it on
//! ```
//!
//! Decoding borrows: [`decode`] and [`Reader`] yield [`TlvRef`]s pointing into the input, with
//! every length checked against the bytes left. Integers are big-endian of at most eight bytes
//! (an empty value is zero), strings are UTF-8 with a terminating zero byte, imprints are
//! checked by [`Imprint::from_bytes`]. [`Encoder`] writes canonical TLV: TLV8 whenever the tag
//! and length fit, minimal integers.

use crate::error::{DecodeError, Error};
use crate::imprint::Imprint;

/// The largest tag a TLV16 header can carry.
pub const MAX_TAG: u16 = 0x1fff;
/// The largest value a TLV16 header can describe.
pub const MAX_VALUE_LEN: usize = 0xffff;
/// Deepest nesting [`TlvRef::walk`] follows: KSI structures nest at most five levels, twice that
/// is room for extensions.
pub const MAX_DEPTH: usize = 10;

const FLAG_TLV16: u8 = 0x80;
const FLAG_NON_CRITICAL: u8 = 0x40;
const FLAG_FORWARD: u8 = 0x20;
const TLV8_MAX_TAG: u16 = 0x1f;
const TLV8_MAX_LEN: usize = 0xff;

/// Decodes exactly one element from `bytes`, rejecting trailing bytes.
///
/// # Errors
///
/// [`DecodeError::Truncated`] if the element is incomplete, [`DecodeError::TrailingBytes`] if
/// anything follows it.
pub fn decode(bytes: &[u8]) -> Result<TlvRef<'_>, DecodeError> {
    let (tlv, rest) = read(bytes)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { left: rest.len() });
    }
    Ok(tlv)
}

/// Decodes one element from the front of `bytes` and returns it with the bytes after it.
///
/// # Errors
///
/// [`DecodeError::Truncated`] if `bytes` ends inside the header or the value.
pub fn read(bytes: &[u8]) -> Result<(TlvRef<'_>, &[u8]), DecodeError> {
    let first = *bytes
        .first()
        .ok_or(DecodeError::Truncated { needed: 2, left: 0 })?;
    let tlv16 = first & FLAG_TLV16 != 0;
    let header_len = if tlv16 { 4 } else { 2 };
    let header = bytes.get(..header_len).ok_or(DecodeError::Truncated {
        needed: header_len,
        left: bytes.len(),
    })?;
    let (tag, len) = match header {
        [_, len] => (u16::from(first & 0x1f), usize::from(*len)),
        [_, tag_low, len_high, len_low] => (
            u16::from_be_bytes([first & 0x1f, *tag_low]),
            usize::from(u16::from_be_bytes([*len_high, *len_low])),
        ),
        _ => {
            return Err(DecodeError::Truncated {
                needed: header_len,
                left: bytes.len(),
            });
        }
    };
    let total = header_len + len;
    let raw = bytes.get(..total).ok_or(DecodeError::Truncated {
        needed: total,
        left: bytes.len(),
    })?;
    let value = raw.get(header_len..).unwrap_or_default();
    let rest = bytes.get(total..).unwrap_or_default();
    let flags = Flags {
        non_critical: first & FLAG_NON_CRITICAL != 0,
        forward: first & FLAG_FORWARD != 0,
    };
    Ok((
        TlvRef {
            tag,
            flags,
            tlv16,
            raw,
            value,
        },
        rest,
    ))
}

/// The N and F flags of an element.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    /// N: a reader that does not know the tag may ignore the element.
    pub non_critical: bool,
    /// F: a reader that does not know the tag should forward the element.
    pub forward: bool,
}

impl Flags {
    /// Neither flag: the element is critical.
    pub const NONE: Flags = Flags {
        non_critical: false,
        forward: false,
    };
    /// F only: used by the published data inside KSI records.
    pub const FORWARD: Flags = Flags {
        non_critical: false,
        forward: true,
    };
    /// N and F: used by metadata padding.
    pub const NON_CRITICAL_FORWARD: Flags = Flags {
        non_critical: true,
        forward: true,
    };
}

// === impl TlvRef ===

/// One decoded element, borrowing the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlvRef<'a> {
    tag: u16,
    flags: Flags,
    tlv16: bool,
    raw: &'a [u8],
    value: &'a [u8],
}

impl<'a> TlvRef<'a> {
    /// The element's tag.
    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// The element's N and F flags.
    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// Whether the element was written with a TLV16 header.
    pub fn is_tlv16(&self) -> bool {
        self.tlv16
    }

    /// The value bytes, without the header.
    pub fn value(&self) -> &'a [u8] {
        self.value
    }

    /// The whole element: header and value, exactly as read.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Iterates over the elements nested in the value.
    pub fn children(&self) -> Reader<'a> {
        Reader { bytes: self.value }
    }

    /// Reads the value as a big-endian unsigned integer of at most eight bytes; empty is zero.
    ///
    /// # Errors
    ///
    /// [`DecodeError::IntegerTooLong`] for more than eight bytes.
    pub fn as_u64(&self) -> Result<u64, DecodeError> {
        if self.value.len() > 8 {
            return Err(DecodeError::IntegerTooLong {
                tag: self.tag,
                len: self.value.len(),
                max: 8,
            });
        }
        Ok(self
            .value
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// Reads the value as a one-byte unsigned integer (hash algorithm ids); empty is zero.
    ///
    /// # Errors
    ///
    /// [`DecodeError::IntegerTooLong`] for more than one byte.
    pub fn as_u8(&self) -> Result<u8, DecodeError> {
        match self.value {
            [] => Ok(0),
            [b] => Ok(*b),
            _ => Err(DecodeError::IntegerTooLong {
                tag: self.tag,
                len: self.value.len(),
                max: 1,
            }),
        }
    }

    /// Reads the value as a KSI string: bytes followed by one zero byte, which is stripped.
    ///
    /// # Errors
    ///
    /// [`DecodeError::Unterminated`] if the value is empty or does not end with zero.
    pub fn as_string(&self) -> Result<KsiString, DecodeError> {
        match self.value.split_last() {
            Some((0, text)) => Ok(KsiString(text.to_vec())),
            _ => Err(DecodeError::Unterminated { tag: self.tag }),
        }
    }

    /// Reads the value as an imprint.
    ///
    /// # Errors
    ///
    /// See [`Imprint::from_bytes`].
    pub fn as_imprint(&self) -> Result<Imprint, DecodeError> {
        Imprint::from_bytes(self.value)
    }

    /// Copies the element into an owned [`Tlv`].
    pub fn to_owned_tlv(&self) -> Tlv {
        Tlv {
            tag: self.tag,
            flags: self.flags,
            value: self.value.to_vec(),
        }
    }

    /// Checks that the element has `tag`.
    ///
    /// # Errors
    ///
    /// [`DecodeError::UnexpectedTag`] otherwise.
    pub fn expect_tag(&self, tag: u16) -> Result<(), DecodeError> {
        if self.tag != tag {
            return Err(DecodeError::UnexpectedTag {
                expected: tag,
                found: self.tag,
            });
        }
        Ok(())
    }

    /// Walks the element and every element nested in it that itself decodes as a sequence of
    /// elements, calling `visit(depth, element)` in document order. Values that do not decode
    /// as nested elements are treated as leaves. Used by the `tlv` fuzz target and dump tools.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooMany`] past [`MAX_DEPTH`] levels.
    pub fn walk(&self, visit: &mut dyn FnMut(usize, &TlvRef<'a>)) -> Result<(), DecodeError> {
        self.walk_at(0, visit)
    }

    fn walk_at(
        &self,
        depth: usize,
        visit: &mut dyn FnMut(usize, &TlvRef<'a>),
    ) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooMany {
                what: "TLV nesting depth",
                count: depth,
                max: MAX_DEPTH,
            });
        }
        visit(depth, self);
        if self.value.is_empty() || self.children().any(|child| child.is_err()) {
            return Ok(());
        }
        for child in self.children().flatten() {
            child.walk_at(depth + 1, visit)?;
        }
        Ok(())
    }
}

// === impl Reader ===

/// An iterator over consecutive elements; stops at the first error.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads the elements of `bytes`, one after another.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<TlvRef<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() {
            return None;
        }
        match read(self.bytes) {
            Ok((tlv, rest)) => {
                self.bytes = rest;
                Some(Ok(tlv))
            }
            Err(e) => {
                self.bytes = &[];
                Some(Err(e))
            }
        }
    }
}

// === impl KsiString ===

/// A KSI string value without its terminating zero byte.
///
/// KSI strings are meant to be UTF-8, but signatures in the wild carry other bytes and those
/// bytes are hashed, so they are kept as they are; [`KsiString::as_str`] checks UTF-8.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KsiString(pub Vec<u8>);

impl KsiString {
    /// The text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The bytes, without the terminating zero.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for KsiString {
    fn from(s: &str) -> Self {
        KsiString(s.as_bytes().to_vec())
    }
}

impl std::fmt::Display for KsiString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

// === impl Tlv ===

/// An owned element: an unknown non-critical element kept for re-encoding, or a raw part.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlv {
    /// The tag.
    pub tag: u16,
    /// The N and F flags.
    pub flags: Flags,
    /// The value bytes.
    pub value: Vec<u8>,
}

// === impl Encoder ===

/// Writes canonical TLV into a growing buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// An empty encoder with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Encoder {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// The bytes written so far.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// Writes one element, with a TLV8 header when the tag and length allow it.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if the tag exceeds [`MAX_TAG`] or the value [`MAX_VALUE_LEN`].
    pub fn element(&mut self, tag: u16, flags: Flags, value: &[u8]) -> Result<(), Error> {
        let header = header(tag, flags, value.len())?;
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(value);
        Ok(())
    }

    /// Writes an element whose value is built by `build`, in place: the value is written after
    /// a provisional header, which is then completed (and widened from TLV8 to TLV16 if the
    /// value turns out longer than 255 bytes). The bytes are those of [`Encoder::element`].
    ///
    /// # Errors
    ///
    /// Whatever `build` returns, or [`Error::Encode`] as for [`Encoder::element`]; nothing is
    /// left written on error.
    pub fn nested(
        &mut self,
        tag: u16,
        flags: Flags,
        build: impl FnOnce(&mut Encoder) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let start = self.buf.len();
        let provisional = header(tag, flags, 0)?.len;
        self.buf.resize(start + provisional, 0);
        let built = build(self).and_then(|()| {
            let len = self.buf.len() - start - provisional;
            let header = header(tag, flags, len)?;
            if header.len > provisional {
                let at = start + provisional;
                self.buf
                    .splice(at..at, std::iter::repeat_n(0, header.len - provisional));
            }
            let slot = self.buf.get_mut(start..start + header.len);
            let slot = slot.ok_or(Error::Unreachable("TLV header slot past the buffer"))?;
            slot.copy_from_slice(header.as_bytes());
            Ok(())
        });
        if built.is_err() {
            self.buf.truncate(start);
        }
        built
    }

    /// Writes an unsigned integer in the fewest bytes (zero is an empty value).
    ///
    /// # Errors
    ///
    /// As for [`Encoder::element`].
    pub fn u64(&mut self, tag: u16, value: u64) -> Result<(), Error> {
        let bytes = value.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        self.element(tag, Flags::NONE, bytes.get(skip..).unwrap_or_default())
    }

    /// Writes a KSI string: the bytes and a terminating zero.
    ///
    /// # Errors
    ///
    /// As for [`Encoder::element`].
    pub fn string(&mut self, tag: u16, value: &KsiString) -> Result<(), Error> {
        let mut bytes = Vec::with_capacity(value.0.len() + 1);
        bytes.extend_from_slice(&value.0);
        bytes.push(0);
        self.element(tag, Flags::NONE, &bytes)
    }

    /// Writes an imprint.
    ///
    /// # Errors
    ///
    /// As for [`Encoder::element`].
    pub fn imprint(&mut self, tag: u16, value: &Imprint) -> Result<(), Error> {
        self.element(tag, Flags::NONE, value.as_bytes())
    }

    /// Writes already encoded elements as they are.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Writes owned elements (kept unknown non-critical ones), flags included.
    ///
    /// # Errors
    ///
    /// As for [`Encoder::element`].
    pub fn tlvs(&mut self, tlvs: &[Tlv]) -> Result<(), Error> {
        tlvs.iter()
            .try_for_each(|t| self.element(t.tag, t.flags, &t.value))
    }
}

/// An element header: TLV8 (2 bytes) when the tag and length allow it, TLV16 (4) otherwise.
struct ElementHeader {
    bytes: [u8; 4],
    len: usize,
}

impl ElementHeader {
    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&self.bytes)
    }
}

/// The header of an element with `tag`, `flags` and a value of `len` bytes.
fn header(tag: u16, flags: Flags, len: usize) -> Result<ElementHeader, Error> {
    let mut first = 0u8;
    if flags.non_critical {
        first |= FLAG_NON_CRITICAL;
    }
    if flags.forward {
        first |= FLAG_FORWARD;
    }
    if tag > MAX_TAG {
        return Err(Error::Encode {
            what: "TLV element",
            why: "tag exceeds 0x1fff",
        });
    }
    let len16 = u16::try_from(len).map_err(|_| Error::Encode {
        what: "TLV element",
        why: "value exceeds 65535 bytes",
    })?;
    let [tag_high, tag_low] = tag.to_be_bytes();
    let [len_high, len_low] = len16.to_be_bytes();
    Ok(if tag <= TLV8_MAX_TAG && len <= TLV8_MAX_LEN {
        ElementHeader {
            bytes: [first | tag_low, len_low, 0, 0],
            len: 2,
        }
    } else {
        ElementHeader {
            bytes: [first | FLAG_TLV16 | tag_high, tag_low, len_high, len_low],
            len: 4,
        }
    })
}

// === decoding helpers shared by the record modules ===

/// Stores `value` in an empty `slot`, or reports a duplicate `tag` in `parent`.
pub(crate) fn once<T>(
    slot: &mut Option<T>,
    parent: u16,
    tag: u16,
    value: T,
) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Duplicate { parent, tag });
    }
    *slot = Some(value);
    Ok(())
}

/// Takes a mandatory value, or reports the missing `tag` in `parent`.
pub(crate) fn required<T>(slot: Option<T>, parent: u16, tag: u16) -> Result<T, DecodeError> {
    slot.ok_or(DecodeError::Missing { parent, tag })
}

/// Keeps an unknown non-critical element; rejects an unknown critical one.
pub(crate) fn unknown(
    parent: u16,
    child: &TlvRef<'_>,
    kept: &mut Vec<Tlv>,
) -> Result<(), DecodeError> {
    if !child.flags().non_critical {
        return Err(DecodeError::UnknownCritical {
            parent,
            tag: child.tag(),
        });
    }
    kept.push(child.to_owned_tlv());
    Ok(())
}

/// Pushes onto a repeated field, enforcing a named limit.
pub(crate) fn push_limited<T>(
    list: &mut Vec<T>,
    value: T,
    what: &'static str,
    max: usize,
) -> Result<(), DecodeError> {
    if list.len() >= max {
        return Err(DecodeError::TooMany {
            what,
            count: list.len() + 1,
            max,
        });
    }
    list.push(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An element built in place has the bytes of one built apart and written whole, at every
    /// length around the TLV8 limit, for short and long tags, and nothing stays on error.
    #[test]
    fn nested_in_place_is_element() {
        let flags = Flags {
            non_critical: true,
            forward: false,
        };
        for tag in [0x02u16, 0x1f, 0x20, 0x801] {
            for len in [0usize, 1, 254, 255, 256, 257, 1000, 65_535] {
                let value: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut whole = Encoder::new();
                whole.raw(b"before");
                whole.element(tag, flags, &value).unwrap();
                let mut in_place = Encoder::new();
                in_place.raw(b"before");
                in_place
                    .nested(tag, flags, |e| {
                        e.raw(&value);
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(
                    in_place.finish(),
                    whole.finish(),
                    "tag {tag:#x}, {len} bytes"
                );
            }
        }
        let mut e = Encoder::new();
        e.raw(b"kept");
        assert!(
            e.nested(0x02, Flags::NONE, |e| e.element(
                0x03,
                Flags::NONE,
                &[0; 65_536]
            ))
            .is_err()
        );
        assert!(
            e.nested(0x02, Flags::NONE, |e| {
                e.raw(&[0; 65_536]);
                Ok(())
            })
            .is_err()
        );
        assert_eq!(e.finish(), b"kept");
    }

    #[test]
    fn tlv8_and_tlv16_headers() {
        let t = decode(&[0x61, 0x02, 0xab, 0xcd]).unwrap();
        assert_eq!(
            (t.tag(), t.flags(), t.is_tlv16(), t.value()),
            (1, Flags::NON_CRITICAL_FORWARD, false, &[0xab, 0xcd][..])
        );
        let t = decode(&[0x88, 0x01, 0x00, 0x01, 0x07]).unwrap();
        assert_eq!(
            (t.tag(), t.is_tlv16(), t.value()),
            (0x801, true, &[0x07][..])
        );
    }

    #[test]
    fn truncated_and_trailing() {
        assert_eq!(
            decode(&[]),
            Err(DecodeError::Truncated { needed: 2, left: 0 })
        );
        assert_eq!(
            decode(&[0x01, 0x03, 0x00]),
            Err(DecodeError::Truncated { needed: 5, left: 3 })
        );
        assert_eq!(
            decode(&[0x88, 0x01]),
            Err(DecodeError::Truncated { needed: 4, left: 2 })
        );
        assert_eq!(
            decode(&[0x01, 0x00, 0x00]),
            Err(DecodeError::TrailingBytes { left: 1 })
        );
    }

    #[test]
    fn canonical_encoding_round_trips() {
        let mut e = Encoder::new();
        e.u64(2, 0).unwrap();
        e.u64(2, 0x0102).unwrap();
        e.element(0x801, Flags::NONE, &[1]).unwrap();
        e.element(3, Flags::FORWARD, &[0; 300]).unwrap();
        let bytes = e.finish();
        let items: Vec<_> = Reader::new(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(items[0].as_u64().unwrap(), 0);
        assert!(items[0].value().is_empty());
        assert_eq!(items[1].value(), &[1, 2]);
        assert!(items[2].is_tlv16());
        assert!(items[3].is_tlv16() && items[3].flags() == Flags::FORWARD);
    }

    #[test]
    fn value_checks() {
        let t = decode(&[0x02, 0x09, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
        assert!(matches!(
            t.as_u64(),
            Err(DecodeError::IntegerTooLong { .. })
        ));
        let s = decode(&[0x01, 0x03, b'h', b'i', 0]).unwrap();
        assert_eq!(s.as_string().unwrap().as_str(), Some("hi"));
        let s = decode(&[0x01, 0x02, b'h', b'i']).unwrap();
        assert!(s.as_string().is_err());
        assert!(decode(&[0x01, 0x00]).unwrap().as_string().is_err());
    }

    #[test]
    fn oversized_values_do_not_encode() {
        let mut e = Encoder::new();
        assert!(
            e.element(1, Flags::NONE, &vec![0; MAX_VALUE_LEN + 1])
                .is_err()
        );
        assert!(e.element(0x2000, Flags::NONE, &[]).is_err());
    }
}
