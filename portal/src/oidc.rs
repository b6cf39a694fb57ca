//! Sign-in with OpenID Connect (Core 1.0, authorization-code flow with PKCE, RFC 7636), shaped
//! like Estonia's TARA: the portal is the relying party ([`client`]); [`provider`] is a small
//! provider with test persons for the demonstration and the tests; [`jws`] signs and checks the
//! ES256 ID tokens; [`transport`] reaches the provider over HTTPS.

pub mod client;
pub mod jws;
pub mod provider;
pub mod transport;
