//! A small OpenID provider shaped like Estonia's TARA, for the demonstration and the tests: the
//! discovery document, an authorization endpoint that lets the user pick one of a handful of
//! test persons, a token endpoint (authorization code with PKCE S256 and the client secret, Basic
//! or in the form) that issues an ES256-signed ID token, and the JWK set.
//!
//! The ID token carries what TARA's does: `sub` is `EE` and the personal code,
//! `profile_attributes` holds `given_name`, `family_name` and `date_of_birth`, with `amr` and
//! `acr`. It also carries the standard `given_name` and `family_name` claims.
//!
//! Never expose it to real users: anyone can sign in as any test person.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::html::escape;
use crate::i18n::Lang;
use crate::oidc::jws::{JwkSet, SigningKey, b64};
use crate::session::{constant_time_eq, random_token};

/// How long an authorization code stays valid.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long a person has to pick in the authorization page.
pub const REQUEST_LIFETIME: Duration = Duration::from_secs(600);
/// How long an ID token is valid.
pub const ID_TOKEN_LIFETIME: Duration = Duration::from_secs(600);
/// Most pending requests and codes kept: the rest are refused until some expire.
pub const MAX_PENDING: usize = 10_000;

/// A test person. Borrowed text for the built-in [`TEST_PERSONS`], owned for persons made at
/// run time (the demo offers its synthetic people).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestPerson {
    /// The Estonian personal code (without the `EE`).
    pub code: Cow<'static, str>,
    /// The given name.
    pub given_name: Cow<'static, str>,
    /// The family name.
    pub family_name: Cow<'static, str>,
    /// The date of birth, `YYYY-MM-DD`.
    pub date_of_birth: Cow<'static, str>,
}

/// The test persons, each with a valid personal code.
pub const TEST_PERSONS: [TestPerson; 4] = [
    TestPerson {
        code: Cow::Borrowed("38001085718"),
        given_name: Cow::Borrowed("Jaan"),
        family_name: Cow::Borrowed("Tamm"),
        date_of_birth: Cow::Borrowed("1980-01-08"),
    },
    TestPerson {
        code: Cow::Borrowed("49002124277"),
        given_name: Cow::Borrowed("Mari-Liis"),
        family_name: Cow::Borrowed("Männik"),
        date_of_birth: Cow::Borrowed("1990-02-12"),
    },
    TestPerson {
        code: Cow::Borrowed("60703150006"),
        given_name: Cow::Borrowed("Õie"),
        family_name: Cow::Borrowed("Kask"),
        date_of_birth: Cow::Borrowed("2007-03-15"),
    },
    TestPerson {
        code: Cow::Borrowed("35106070018"),
        given_name: Cow::Borrowed("Ülo"),
        family_name: Cow::Borrowed("Saar"),
        date_of_birth: Cow::Borrowed("1951-06-07"),
    },
];

/// A client registered with the provider.
#[derive(Clone, Debug)]
pub struct RegisteredClient {
    /// The client id.
    pub id: String,
    /// The client secret.
    pub secret: String,
    /// The redirect URIs, compared exactly.
    pub redirect_uris: Vec<String>,
}

/// The provider.
#[derive(Debug)]
pub struct Provider {
    issuer: String,
    clients: Vec<RegisteredClient>,
    persons: Vec<TestPerson>,
    key: SigningKey,
    requests: Mutex<HashMap<String, (Instant, AuthRequest)>>,
    codes: Mutex<HashMap<String, (Instant, Grant)>>,
}

#[derive(Clone, Debug, Deserialize)]
struct AuthRequest {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    ui_locales: Option<String>,
}

#[derive(Clone, Debug)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    nonce: String,
    challenge: String,
    person: TestPerson,
}

#[derive(Debug, Deserialize)]
struct Pick {
    request: String,
    person: Option<String>,
    cancel: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

// === impl Provider ===

impl Provider {
    /// A provider at `issuer` (its public base URL, no trailing `/`) for `clients`, with a fresh
    /// signing key, offering [`TEST_PERSONS`].
    ///
    /// # Errors
    ///
    /// A message when no key can be generated.
    pub fn new(issuer: &str, clients: Vec<RegisteredClient>) -> Result<Provider, String> {
        Ok(Provider {
            issuer: issuer.trim_end_matches('/').to_owned(),
            clients,
            persons: TEST_PERSONS.to_vec(),
            key: SigningKey::generate()?,
            requests: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
        })
    }

    /// The same provider offering `persons` instead, in that order (the first is preselected).
    /// Each code must be a valid personal code, or the portal refuses the ID token.
    pub fn with_persons(mut self, persons: Vec<TestPerson>) -> Provider {
        self.persons = persons;
        self
    }

    /// The persons one may sign in as.
    pub fn persons(&self) -> &[TestPerson] {
        &self.persons
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public keys.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.key.jwk()],
        }
    }

    fn client(&self, id: &str) -> Option<&RegisteredClient> {
        self.clients.iter().find(|c| c.id == id)
    }
}

/// The provider's routes: `/.well-known/openid-configuration`, `/authorize` (GET shows the
/// picker, POST takes the pick), `/token`, `/jwks`, `/provider.css`.
pub fn router(provider: Arc<Provider>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/authorize", get(authorize).post(pick))
        .route("/token", axum::routing::post(token))
        .route("/jwks", get(jwks))
        .route(
            "/provider.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    crate::pages::STYLESHEET,
                )
            }),
        )
        .with_state(provider)
}

async fn discovery(State(provider): State<Arc<Provider>>) -> Response {
    let issuer = &provider.issuer;
    axum::Json(serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "given_name", "family_name", "profile_attributes", "amr", "acr", "nonce"],
        "ui_locales_supported": ["et", "en"],
    }))
    .into_response()
}

async fn jwks(State(provider): State<Arc<Provider>>) -> Response {
    axum::Json(provider.jwks()).into_response()
}

async fn authorize(State(provider): State<Arc<Provider>>, RawQuery(query): RawQuery) -> Response {
    let request: AuthRequest =
        match serde_urlencoded::from_str(query.as_deref().unwrap_or_default()) {
            Ok(r) => r,
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    &format!("the authorization request does not decode: {e}"),
                );
            }
        };
    let client = request
        .client_id
        .as_deref()
        .and_then(|id| provider.client(id));
    let Some(client) = client else {
        return problem(StatusCode::BAD_REQUEST, "unknown client_id");
    };
    let Some(redirect) = request
        .redirect_uri
        .clone()
        .filter(|uri| client.redirect_uris.contains(uri))
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "redirect_uri is not registered for this client",
        );
    };
    let refusal = if request.response_type.as_deref() != Some("code") {
        Some("unsupported_response_type")
    } else if !request
        .scope
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .any(|s| s == "openid")
    {
        Some("invalid_scope")
    } else if request.state.as_deref().is_none_or(str::is_empty)
        || request.nonce.as_deref().is_none_or(str::is_empty)
        || request.code_challenge_method.as_deref() != Some("S256")
        || request
            .code_challenge
            .as_deref()
            .is_none_or(|c| !(43..=128).contains(&c.len()))
    {
        Some("invalid_request")
    } else {
        None
    };
    if let Some(error) = refusal {
        return redirect_to(
            &redirect,
            &[
                ("error", error),
                ("state", request.state.as_deref().unwrap_or_default()),
            ],
        );
    }
    let lang = request
        .ui_locales
        .as_deref()
        .and_then(|l| l.split(' ').find_map(Lang::parse))
        .unwrap_or(Lang::Et);
    let id = random_token();
    {
        let mut requests = provider
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        requests.retain(|_, (at, _)| at.elapsed() < REQUEST_LIFETIME);
        if requests.len() >= MAX_PENDING {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many sign-ins in progress; try again in a minute",
            );
        }
        requests.insert(id.clone(), (Instant::now(), request));
    }
    let origin = origin(&redirect);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (header::CONTENT_SECURITY_POLICY, format!("default-src 'none'; style-src 'self'; form-action 'self' {origin}; frame-ancestors 'none'; base-uri 'none'")),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        picker_page(lang, &id, &provider.persons),
    )
        .into_response()
}

async fn pick(State(provider): State<Arc<Provider>>, body: Bytes) -> Response {
    let Ok(pick) = serde_urlencoded::from_bytes::<Pick>(&body) else {
        return problem(StatusCode::BAD_REQUEST, "the form does not decode");
    };
    let request = provider
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&pick.request);
    let Some((_, request)) = request.filter(|(at, _)| at.elapsed() < REQUEST_LIFETIME) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "this sign-in has expired; start again from the portal",
        );
    };
    let redirect = request.redirect_uri.clone().unwrap_or_default();
    let state = request.state.clone().unwrap_or_default();
    let person = pick
        .person
        .as_deref()
        .and_then(|code| provider.persons.iter().find(|p| p.code == code));
    let Some(person) = person.filter(|_| pick.cancel.is_none()) else {
        return redirect_to(&redirect, &[("error", "access_denied"), ("state", &state)]);
    };
    let code = random_token();
    let grant = Grant {
        client_id: request.client_id.unwrap_or_default(),
        redirect_uri: redirect.clone(),
        nonce: request.nonce.unwrap_or_default(),
        challenge: request.code_challenge.unwrap_or_default(),
        person: person.clone(),
    };
    {
        let mut codes = provider
            .codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        codes.retain(|_, (at, _)| at.elapsed() < CODE_LIFETIME);
        if codes.len() >= MAX_PENDING {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many sign-ins in progress; try again in a minute",
            );
        }
        codes.insert(code.clone(), (Instant::now(), grant));
    }
    redirect_to(&redirect, &[("code", &code), ("state", &state)])
}

async fn token(State(provider): State<Arc<Provider>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<TokenRequest>(&body) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    if form.grant_type.as_deref() != Some("authorization_code") {
        return token_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let (client_id, secret) = match basic_credentials(&headers) {
        Some(pair) => pair,
        None => (
            form.client_id.clone().unwrap_or_default(),
            form.client_secret.clone().unwrap_or_default(),
        ),
    };
    let Some(client) = provider
        .client(&client_id)
        .filter(|c| constant_time_eq(c.secret.as_bytes(), secret.as_bytes()))
    else {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let grant = provider
        .codes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(form.code.as_deref().unwrap_or_default());
    let Some((_, grant)) = grant.filter(|(at, _)| at.elapsed() < CODE_LIFETIME) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let verifier = form.code_verifier.unwrap_or_default();
    let challenge = b64(&Sha256::digest(verifier.as_bytes()));
    if grant.client_id != client.id
        || form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str())
        || !(43..=128).contains(&verifier.len())
        || !constant_time_eq(challenge.as_bytes(), grant.challenge.as_bytes())
    {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let person = &grant.person;
    let claims = serde_json::json!({
        "iss": provider.issuer,
        "aud": client.id,
        "sub": format!("EE{}", person.code),
        "iat": now,
        "nbf": now,
        "exp": now + ID_TOKEN_LIFETIME.as_secs(),
        "jti": random_token(),
        "nonce": grant.nonce,
        "amr": ["smartid"],
        "acr": "high",
        "given_name": person.given_name,
        "family_name": person.family_name,
        "profile_attributes": {"given_name": person.given_name, "family_name": person.family_name, "date_of_birth": person.date_of_birth},
    });
    let Ok(id_token) = provider.key.sign(&claims) else {
        return token_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({"access_token": random_token(), "token_type": "Bearer", "expires_in": ID_TOKEN_LIFETIME.as_secs(), "id_token": id_token})),
    )
        .into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?,
    )
    .ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let decode = |s: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()?
            .pop()
            .map(|(_, v)| v)
    };
    Some((decode(id)?, decode(secret)?))
}

fn token_error(status: StatusCode, error: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({"error": error})),
    )
        .into_response()
}

fn problem(status: StatusCode, message: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in error</title><link rel=\"stylesheet\" href=\"/provider.css\"></head><body><main><h1>Sign-in error</h1><p>{}</p></main></body></html>",
        escape(message)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'",
            ),
        ],
        page,
    )
        .into_response()
}

fn redirect_to(uri: &str, params: &[(&str, &str)]) -> Response {
    let query = serde_urlencoded::to_string(params).unwrap_or_default();
    let separator = if uri.contains('?') { '&' } else { '?' };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, format!("{uri}{separator}{query}")),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// `scheme://host[:port]` of a URL, for the form-action directive.
fn origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "'none'".into();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains([' ', ';', '\'', ',']) {
        return "'none'".into();
    }
    format!("{scheme}://{authority}")
}

fn picker_page(lang: Lang, request: &str, persons: &[TestPerson]) -> String {
    let (title, intro, legend, go, cancel, born) = match lang {
        Lang::Et => (
            "Riigi autentimisteenus (testversioon)",
            "See on arendamiseks ja testimiseks mõeldud autentimisteenus. Vali testisik, kellena sisse logida.",
            "Testisik",
            "Jätka",
            "Katkesta",
            "sündinud",
        ),
        Lang::En => (
            "National sign-in service (test version)",
            "This sign-in service is for development and testing. Choose the test person to sign in as.",
            "Test person",
            "Continue",
            "Cancel",
            "born",
        ),
    };
    let mut options = String::new();
    for (i, person) in persons.iter().enumerate() {
        let checked = if i == 0 { " checked" } else { "" };
        options.push_str(&format!(
            "<div class=\"choice\"><input type=\"radio\" name=\"person\" id=\"person-{code}\" value=\"{code}\"{checked}><label for=\"person-{code}\">{given} {family} <span class=\"hint\">({born} {dob}, EE{code})</span></label></div>\n",
            code = escape(&person.code),
            given = escape(&person.given_name),
            family = escape(&person.family_name),
            dob = escape(&person.date_of_birth),
        ));
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="{code}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title><link rel="stylesheet" href="/provider.css"></head>
<body>
<header><div class="bar"><p class="brand">{title}</p></div></header>
<main id="main">
<h1>{title}</h1>
<p>{intro}</p>
<form method="post" action="/authorize">
<input type="hidden" name="request" value="{request}">
<fieldset><legend>{legend}</legend>
{options}</fieldset>
<p class="actions"><button type="submit" id="continue">{go}</button> <button type="submit" name="cancel" value="1" class="secondary">{cancel}</button></p>
</form>
</main>
</body>
</html>
"#,
        code = lang.code(),
        request = escape(request),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_authority_or_nothing() {
        assert_eq!(
            origin("http://127.0.0.1:8080/oidc/callback?x=1"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            origin("https://portal.example/cb"),
            "https://portal.example"
        );
        assert_eq!(origin("javascript:alert(1)"), "'none'");
        assert_eq!(origin("http://a; script-src *"), "'none'");
    }

    #[test]
    fn test_persons_have_valid_personal_codes() {
        for person in TEST_PERSONS {
            let subject: Result<backbone_gateway::r1::DataSubject, _> =
                format!("EE{}", person.code).parse();
            assert!(subject.is_ok(), "{}", person.code);
        }
    }
}
