//! Who sent a request: the client id a round puts in the request's metadata (KSI Data Formats,
//! "Metadata", client id).
//!
//! A round takes in every request by value, and most requests of a round come from a handful of
//! clients, so the id must cost next to nothing to move and to drop. A short id (`json`,
//! `rfc3161`, a login id of up to [`MAX_INLINE`] bytes) is kept inline: moving it is copying 16
//! bytes and dropping it does nothing. A longer one is shared behind an `Arc`, which costs an
//! atomic count update per clone and drop (in a profile of a 65,536-request round whose
//! requests all shared one `Arc<str>`, about 5 % of the time went on those updates).
//!
//! ```text
//!  "hospital-7"           ─▶ Inline { len: 10, bytes: "hospital-7\0\0\0\0" }  (no heap, no count)
//!  "a longer client id …" ─▶ Shared(Arc<String>)                (one heap string per client)
//! ```

use std::sync::Arc;

/// The longest client id kept inline; longer ones are shared.
pub const MAX_INLINE: usize = 14;

/// A request's client id: inline when at most [`MAX_INLINE`] bytes, shared otherwise. Two ids
/// are equal when their text is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientId(Repr);

/// Which form an id takes depends only on its length, so the derived equality and hash agree
/// with the text's.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// `bytes[..len]` is the id; the rest is zero.
    Inline { len: u8, bytes: [u8; MAX_INLINE] },
    /// A thin pointer, so that an id takes 16 bytes in either form.
    Shared(Arc<String>),
}

// === impl ClientId ===

impl ClientId {
    /// The id's text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                // Built only from a `&str` of exactly `len` bytes, so this cannot fail; an empty
                // id is the harmless answer if it ever did.
                bytes
                    .get(..usize::from(*len))
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or_default()
            }
            Repr::Shared(id) => id,
        }
    }

    /// The id's bytes, as the metadata carries them.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Shared(id) => id.as_bytes(),
        }
    }
}

impl From<&str> for ClientId {
    fn from(id: &str) -> Self {
        let mut bytes = [0u8; MAX_INLINE];
        match (u8::try_from(id.len()), bytes.get_mut(..id.len())) {
            (Ok(len), Some(inline)) => {
                inline.copy_from_slice(id.as_bytes());
                ClientId(Repr::Inline { len, bytes })
            }
            _ => ClientId(Repr::Shared(Arc::new(id.to_owned()))),
        }
    }
}

impl From<String> for ClientId {
    fn from(id: String) -> Self {
        match id.len() {
            0..=MAX_INLINE => ClientId::from(id.as_str()),
            _ => ClientId(Repr::Shared(Arc::new(id))),
        }
    }
}

impl std::fmt::Debug for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_inline_long_ones_shared_and_both_keep_their_text() {
        for (id, inline) in [
            ("", true),
            ("anon", true),
            ("a".repeat(MAX_INLINE).as_str(), true),
            ("é".repeat(8).as_str(), false),
            ("a client id too long for one block", false),
        ] {
            let client = ClientId::from(id);
            assert_eq!(matches!(client.0, Repr::Inline { .. }), inline, "{id}");
            assert_eq!((client.as_str(), client.as_bytes()), (id, id.as_bytes()));
            assert_eq!(client, ClientId::from(id.to_owned()));
            assert_eq!(format!("{client:?}"), format!("{id:?}"));
        }
        assert_ne!(ClientId::from("anon"), ClientId::from("anon2"));
        assert_eq!(std::mem::size_of::<ClientId>(), 16);
    }
}
