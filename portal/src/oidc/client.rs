//! The relying party: the authorization request (state, nonce, PKCE S256), the code exchange
//! at the token endpoint, and every check on the ID token — ES256 signature under the provider's
//! published keys, issuer, audience, expiry, nonce, and a subject that is an Estonian personal
//! code (`EE` + 11 digits with a correct check digit) with the name claims.
//!
//! The provider is reached through [`Transport`]: `https://`, checked against the CA certificates
//! of [`OidcConfig::ca_file`], or plain HTTP to a loopback host only. The issuer is checked when
//! the client is made, the endpoints named by the discovery document when it is fetched.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use crate::Error;
use crate::i18n::Lang;
use crate::oidc::jws::{self, JwkSet, b64};
use crate::oidc::transport::{self, Reply, Transport, TransportError};
use crate::session::{constant_time_eq, random_token};

/// Clock skew tolerated on `exp`, `iat` and `nbf`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How the portal is registered with its provider.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// The provider's issuer URL (discovery is at `{issuer}/.well-known/openid-configuration`):
    /// `https://`, or `http://` to a loopback host (the test provider).
    pub issuer: String,
    /// The portal's client id.
    pub client_id: String,
    /// The portal's client secret (sent with HTTP Basic authentication).
    pub client_secret: String,
    /// The portal's redirect URI, `{public url}/oidc/callback`.
    pub redirect_uri: String,
    /// The CA certificates (a PEM bundle) trusted for an `https` provider, usually
    /// [`transport::DEFAULT_CA_FILE`]. Read only when the issuer is `https`.
    pub ca_file: PathBuf,
}

/// A person the provider authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    /// `EE` and the personal code: the data subject the gateways know.
    pub subject: String,
    /// Given name.
    pub given_name: String,
    /// Family name.
    pub family_name: String,
}

impl Person {
    /// `Given Family`.
    pub fn name(&self) -> String {
        format!("{} {}", self.given_name, self.family_name)
    }
}

/// A started sign-in: what the portal keeps until the provider sends the browser back.
#[derive(Clone, Debug)]
pub struct PendingLogin {
    /// The `state` sent.
    pub state: String,
    /// The `nonce` sent.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
}

#[derive(Clone, Debug, serde::Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// The relying party.
#[derive(Debug)]
pub struct OidcClient {
    config: OidcConfig,
    http: Transport,
    metadata: RwLock<Option<Metadata>>,
    keys: RwLock<JwkSet>,
}

// === impl OidcClient ===

impl OidcClient {
    /// A client; nothing is fetched until the first sign-in. Each request to the provider must
    /// be answered within `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an issuer that is neither `https` nor plain HTTP to a loopback
    /// host (key `portal.oidc.issuer`), or a CA file that cannot be used.
    pub fn new(config: OidcConfig, timeout: Duration) -> Result<OidcClient, Error> {
        transport::check_url(&config.issuer).map_err(|e| Error::Config {
            key: "portal.oidc.issuer",
            reason: e.to_string(),
        })?;
        let ca_file = transport::is_https(&config.issuer).then_some(config.ca_file.as_path());
        let http = Transport::new(ca_file, timeout)?;
        Ok(OidcClient {
            config,
            http,
            metadata: RwLock::new(None),
            keys: RwLock::new(JwkSet::default()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Starts a sign-in: fresh state, nonce and PKCE verifier, and the URL to send the browser to.
    ///
    /// # Errors
    ///
    /// [`Error::Oidc`] when the discovery document cannot be had.
    pub async fn begin(&self, lang: Lang) -> Result<(PendingLogin, String), Error> {
        let metadata = self.metadata().await?;
        let login = PendingLogin {
            state: random_token(),
            nonce: random_token(),
            verifier: format!("{}{}", random_token(), random_token()),
        };
        let challenge = b64(&Sha256::digest(login.verifier.as_bytes()));
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", self.config.client_id.as_str()),
            ("redirect_uri", self.config.redirect_uri.as_str()),
            ("scope", "openid"),
            ("state", login.state.as_str()),
            ("nonce", login.nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("ui_locales", lang.code()),
        ])
        .map_err(|_| Error::Unreachable("authorization query does not encode"))?;
        let separator = if metadata.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok((
            login,
            format!("{}{separator}{query}", metadata.authorization_endpoint),
        ))
    }

    /// Completes a sign-in: checks `state`, exchanges `code`, checks the ID token.
    ///
    /// # Errors
    ///
    /// [`Error::IdToken`] when a check fails, [`Error::Oidc`] when the provider cannot be
    /// reached or answers something else than a token.
    pub async fn finish(
        &self,
        login: &PendingLogin,
        state: &str,
        code: &str,
        now_secs: u64,
    ) -> Result<Person, Error> {
        if !constant_time_eq(login.state.as_bytes(), state.as_bytes()) {
            return Err(Error::IdToken(
                "state does not match the sign-in started here".into(),
            ));
        }
        let metadata = self.metadata().await?;
        let form = serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.config.redirect_uri.as_str()),
            ("code_verifier", login.verifier.as_str()),
        ])
        .map_err(|_| Error::Unreachable("token request does not encode"))?;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            crate::html::query_value(&self.config.client_id),
            crate::html::query_value(&self.config.client_secret)
        ));
        let url = &metadata.token_endpoint;
        let response = self
            .http
            .post_form(
                url,
                &[(http::header::AUTHORIZATION, format!("Basic {basic}"))],
                form,
            )
            .await?;
        let Reply { status, body, .. } = not_redirected(url, response)?;
        let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            self.oidc(format!(
                "token endpoint answered {status} that is not JSON: {e}"
            ))
        })?;
        let Some(id_token) = answer["id_token"].as_str().filter(|_| status.is_success()) else {
            return Err(self.oidc(format!(
                "token endpoint answered {status}: {}",
                answer["error"].as_str().unwrap_or("no id_token")
            )));
        };
        let claims = self.verify_signature(id_token).await?;
        check_claims(
            &claims,
            &metadata.issuer,
            &self.config.client_id,
            &login.nonce,
            now_secs,
        )
    }

    async fn verify_signature(&self, token: &str) -> Result<serde_json::Value, Error> {
        let keys = self.keys.read().await.clone();
        if let Ok(claims) = jws::verify(token, &keys) {
            return Ok(claims);
        }
        // Unknown key: the provider may have rotated; fetch the set once and try again.
        let metadata = self.metadata().await?;
        let fresh: JwkSet = self.json(&metadata.jwks_uri).await?;
        *self.keys.write().await = fresh.clone();
        jws::verify(token, &fresh).map_err(Error::IdToken)
    }

    async fn metadata(&self) -> Result<Metadata, Error> {
        if let Some(metadata) = self.metadata.read().await.clone() {
            return Ok(metadata);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let metadata: Metadata = self.json(&url).await?;
        if metadata.issuer.trim_end_matches('/') != self.config.issuer.trim_end_matches('/') {
            return Err(self.oidc(format!("discovery names issuer {:?}", metadata.issuer)));
        }
        // The browser is sent to the first, the portal calls the others: all must be https, or
        // plain HTTP on this host.
        for endpoint in [
            &metadata.authorization_endpoint,
            &metadata.token_endpoint,
            &metadata.jwks_uri,
        ] {
            transport::check_url(endpoint)?;
        }
        *self.metadata.write().await = Some(metadata.clone());
        Ok(metadata)
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, Error> {
        let response = not_redirected(url, self.http.get(url).await?)?;
        if !response.status.is_success() {
            return Err(self.oidc(format!("{url} answered {}", response.status)));
        }
        serde_json::from_slice(&response.body).map_err(|e| self.oidc(format!("{url}: {e}")))
    }

    fn oidc(&self, reason: String) -> Error {
        Error::Oidc {
            issuer: self.config.issuer.clone(),
            reason,
        }
    }
}

/// The reply, unless it is a redirect: OpenID Connect endpoints are called where the discovery
/// document says, never elsewhere.
fn not_redirected(url: &str, reply: Reply) -> Result<Reply, Error> {
    if !reply.status.is_redirection() {
        return Ok(reply);
    }
    let location = reply
        .headers
        .get(http::header::LOCATION)
        .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
        .unwrap_or_default();
    Err(Error::Provider {
        url: url.to_owned(),
        source: TransportError::Redirected {
            status: reply.status,
            location,
        },
    })
}

/// The checks on a signed ID token's claims (OpenID Connect Core §3.1.3.7).
///
/// # Errors
///
/// [`Error::IdToken`] naming the claim that failed.
pub fn check_claims(
    claims: &serde_json::Value,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    now_secs: u64,
) -> Result<Person, Error> {
    let refuse = |what: &str| Err(Error::IdToken(what.to_owned()));
    if claims["iss"].as_str().map(|i| i.trim_end_matches('/')) != Some(issuer.trim_end_matches('/'))
    {
        return refuse("iss is not the configured provider");
    }
    let audience_ok = match &claims["aud"] {
        serde_json::Value::String(aud) => aud == client_id,
        serde_json::Value::Array(auds) => {
            auds.iter().any(|a| a == client_id) && (auds.len() == 1 || claims["azp"] == client_id)
        }
        _ => false,
    };
    if !audience_ok {
        return refuse("aud does not name this portal");
    }
    let skew = CLOCK_SKEW.as_secs();
    match claims["exp"].as_u64() {
        Some(exp) if exp + skew > now_secs => {}
        _ => return refuse("the token has expired or has no exp"),
    }
    if claims["iat"]
        .as_u64()
        .is_none_or(|iat| iat > now_secs + skew)
        || claims["nbf"]
            .as_u64()
            .is_some_and(|nbf| nbf > now_secs + skew)
    {
        return refuse("the token is not valid yet");
    }
    if !claims["nonce"]
        .as_str()
        .is_some_and(|n| constant_time_eq(n.as_bytes(), nonce.as_bytes()))
    {
        return refuse("nonce does not match the sign-in started here");
    }
    let subject = claims["sub"].as_str().unwrap_or_default();
    if !subject.starts_with("EE")
        || subject
            .parse::<backbone_gateway::r1::DataSubject>()
            .is_err()
    {
        return refuse("sub is not EE and an Estonian personal code");
    }
    let name = |claim: &str| {
        claims["profile_attributes"][claim]
            .as_str()
            .or_else(|| claims[claim].as_str())
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.chars().count() <= 200)
            .map(str::to_owned)
    };
    let (Some(given_name), Some(family_name)) = (name("given_name"), name("family_name")) else {
        return refuse("the name claims are missing");
    };
    Ok(Person {
        subject: subject.to_owned(),
        given_name,
        family_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> serde_json::Value {
        serde_json::json!({"iss": "http://op", "aud": "portal", "exp": 1000, "iat": 900, "nonce": "n", "sub": "EE38001085718",
            "profile_attributes": {"given_name": "Jaan", "family_name": "Tamm"}})
    }

    #[test]
    fn good_claims_give_the_person() {
        let person = check_claims(&claims(), "http://op/", "portal", "n", 950).unwrap();
        assert_eq!(
            person,
            Person {
                subject: "EE38001085718".into(),
                given_name: "Jaan".into(),
                family_name: "Tamm".into()
            }
        );
    }

    #[test]
    fn each_bad_claim_is_refused() {
        let cases: [(&str, serde_json::Value); 9] = [
            ("iss", "http://evil".into()),
            ("aud", "other".into()),
            ("aud", serde_json::json!(["portal", "other"])),
            ("exp", 800.into()),
            ("iat", 2000.into()),
            ("nonce", "m".into()),
            ("sub", "EE38001085719".into()),
            ("sub", "LV38001085718".into()),
            (
                "profile_attributes",
                serde_json::json!({"given_name": "Jaan"}),
            ),
        ];
        for (claim, value) in cases {
            let mut c = claims();
            c[claim] = value.clone();
            assert!(
                check_claims(&c, "http://op", "portal", "n", 950).is_err(),
                "{claim} = {value}"
            );
        }
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert!(check_claims(&c, "http://op", "portal", "n", 950).is_err());
    }
}
