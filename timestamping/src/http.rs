//! The service over HTTP: KSI aggregator and extender PDUs v2 (HMAC-sealed) for KSI's own
//! clients, and a small JSON API.
//!
//! Spec: Guardtime, "KSI Data Formats", "Aggregator PDU", "Extender PDU" and "MAC"; status codes
//! as libksi's `KSI_SERVICE_*` values.
//!
//! ```text
//!  POST /                       aggregator request PDU (0x220) ─▶ response PDU (0x221)
//!                               extender request PDU (0x320) ─▶ response PDU (0x321)
//!  POST /extend                 extender request PDU only (for clients with an extender URL)
//!  POST /sign                   {"hash": "<imprint hex>", "level": 0} ─▶ {"signature": base64, ...}
//!  GET  /publications/latest    {"time", "hash", "publication_string"}      404 before the first
//!  GET  /publications           every publication, oldest first
//!  GET  /publications.bin       the signed KSI publications file (KSIPUBLF), when kept
//!  GET  /certificate            {"id": hex, "certificate": base64 DER} of the calendar key
//!  GET  /extend/{time}          {"calendar_chain": base64 0x802} from second `time` to the head
//!  POST /tsa                    RFC 3161 TimeStampReq (application/timestamp-query)
//!                               ─▶ TimeStampResp (application/timestamp-reply), when configured
//!  GET  /tsa/{serial}.ksig      the keyless signature of token `serial` (hex), 404 if unknown
//!  GET  /tsa/certificate.pem    the TSA certificate
//! ```
//!
//! An RFC 3161 reply is HTTP 200 whatever its PKIStatus (RFC 3161 §3.4); a request with another
//! content type gets 415. A token is answered only after SHA-256 of the token is in a committed,
//! signed calendar round and that keyless signature is stored under the token's serial.
//!
//! Bodies above [`MAX_BODY`] are refused with 413 before they are read; a PDU carries at most
//! [`MAX_REQUESTS_PER_PDU`] requests (more: 0x101, invalid request, before anything is signed),
//! because the answer must fit in one PDU.
//! The extender's statuses are in [`crate::extender`].
//!
//! The router runs over a [`Backend`]: the calendar's [`Handle`], or a child aggregator's
//! [`child::Handle`], which signs through its parent and has no calendar: there the calendar
//! routes (extender, publications, certificate) answer 404, or KSI status 0x101 to an extender
//! PDU, and a round the parent failed is answered with KSI status 0x300 (0x301 when it did not
//! answer in time), or HTTP 502 (504) on `POST /sign`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use backbone_timestamping_verify::imprint::HashAlgorithm;
use backbone_timestamping_verify::pdu::{
    self, AggregationResponse, AggregatorRequest, ExtenderRequest, ExtenderResponse, Header,
    Payload, TAG_AGGREGATOR_RESPONSE, TAG_EXTENDER_REQUEST, TAG_EXTENDER_RESPONSE,
};
use backbone_timestamping_verify::publication::PublicationData;
use backbone_timestamping_verify::tlv::{Encoder, Flags};
use serde::{Deserialize, Serialize};

use crate::child;
use crate::error::{Error, ParentError};
use crate::round::{ClientId, InputHash, Request};
use crate::service::{Handle, Placed};
use crate::tsa::{self, FailureInfo, store::TokenStore};

/// The largest request body: a full PDU of [`backbone_timestamping_verify::pdu::MAX_PAYLOADS`]
/// requests is under 100 KiB; 1 MiB leaves room without inviting abuse.
pub const MAX_BODY: usize = 1 << 20;
/// The client id of JSON requests, which carry no authentication.
pub const JSON_CLIENT_ID: &str = "json";
/// The client id in the aggregation chain of every RFC 3161 token's hash.
pub const TSA_CLIENT_ID: &str = "rfc3161";
/// The media type of RFC 3161 requests (RFC 3161 §3.4).
pub const TIMESTAMP_QUERY: &str = "application/timestamp-query";
/// The media type of RFC 3161 replies.
pub const TIMESTAMP_REPLY: &str = "application/timestamp-reply";

/// Most requests one aggregator or extender PDU may carry. A response PDU is one TLV16 element
/// of at most 65,535 bytes; a signature is about 1.4 KB and a calendar chain up to 64 links of
/// 35 bytes, so 24 answers always fit, whatever the round size and the calendar height. More
/// requests go in more PDUs (on the same connection).
pub const MAX_REQUESTS_PER_PDU: usize = 24;

/// KSI service status: the request PDU does not decode.
pub const STATUS_INVALID_REQUEST: u64 = 0x101;
/// KSI service status: unknown login id or wrong HMAC.
pub const STATUS_AUTHENTICATION_FAILURE: u64 = 0x102;
/// KSI service status: a payload is refused (level, hash function).
pub const STATUS_INVALID_PAYLOAD: u64 = 0x103;
/// KSI service status: the round is full.
pub const STATUS_TOO_MANY_REQUESTS: u64 = 0x106;
/// KSI service status: the service failed.
pub const STATUS_INTERNAL_ERROR: u64 = 0x200;
/// KSI service status: the upstream (parent) aggregator failed the round.
pub const STATUS_UPSTREAM_ERROR: u64 = 0x300;
/// KSI service status: the upstream (parent) aggregator did not answer in time.
pub const STATUS_UPSTREAM_TIMEOUT: u64 = 0x301;

/// What signs behind the router.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The top aggregator over the calendar: signs, extends, publishes.
    Calendar(Handle),
    /// A child aggregator: signs through its parent; no calendar here.
    Child(child::Handle),
}

impl Backend {
    /// Signs `request` in the backend's next round.
    ///
    /// # Errors
    ///
    /// As [`Handle::sign`] and [`child::Handle::sign`].
    pub async fn sign(
        &self,
        request: Request,
    ) -> Result<backbone_timestamping_verify::Signature, Arc<Error>> {
        match self {
            Backend::Calendar(handle) => handle.sign(request).await,
            Backend::Child(handle) => handle.sign(request).await,
        }
    }

    /// Signs `requests` in the backend's next round, in one submission.
    ///
    /// # Errors
    ///
    /// As [`Handle::sign_all`] and [`child::Handle::sign_all`].
    pub async fn sign_all(&self, requests: Vec<Request>) -> Result<Vec<Placed>, Arc<Error>> {
        match self {
            Backend::Calendar(handle) => handle.sign_all(requests).await,
            Backend::Child(handle) => handle.sign_all(requests).await,
        }
    }

    /// Signs `requests` like [`Backend::sign_all`] and turns their answers into `T` with
    /// `respond`: on the calendar's answering thread, in the order the submissions came
    /// ([`Handle::sign_all_with`]), or here once a child's parent has answered.
    ///
    /// # Errors
    ///
    /// As [`Handle::sign_all_with`] and [`child::Handle::sign_all`].
    pub async fn sign_all_with<T, F>(
        &self,
        requests: Vec<Request>,
        respond: F,
    ) -> Result<T, Arc<Error>>
    where
        T: Send + 'static,
        F: FnOnce(Vec<Placed>) -> T + Send + 'static,
    {
        match self {
            Backend::Calendar(handle) => handle.sign_all_with(requests, respond).await,
            Backend::Child(handle) => handle.sign_all(requests).await.map(respond),
        }
    }

    /// The calendar, for the routes that read it; `None` in a child aggregator.
    pub fn calendar(&self) -> Option<&Handle> {
        match self {
            Backend::Calendar(handle) => Some(handle),
            Backend::Child(_) => None,
        }
    }
}

impl From<Handle> for Backend {
    fn from(handle: Handle) -> Self {
        Backend::Calendar(handle)
    }
}

impl From<child::Handle> for Backend {
    fn from(handle: child::Handle) -> Self {
        Backend::Child(handle)
    }
}

/// Who may send PDUs: one login id and its HMAC key.
#[derive(Clone)]
pub struct PduAuth {
    /// The login id in the PDU header.
    pub login_id: String,
    /// The shared HMAC key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for PduAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PduAuth {{ login_id: {:?}, key: <redacted> }}",
            self.login_id
        )
    }
}

/// The latest publication as the JSON API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicationJson {
    /// Seconds since 1970.
    pub time: u64,
    /// The calendar root's imprint, hex.
    pub hash: String,
    /// The publication string (base32 with CRC-32).
    pub publication_string: String,
}

/// `POST /sign` request.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignRequest {
    /// The imprint to sign, hex (algorithm id byte, then digest).
    pub hash: String,
    /// The level of the hash in the client's tree.
    #[serde(default)]
    pub level: u8,
}

/// `POST /sign` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignResponse {
    /// The KSI signature (0x800), base64.
    pub signature: String,
    /// The round's second.
    pub aggregation_time: u64,
}

/// The RFC 3161 front end: the authority that signs tokens and where each token's keyless
/// signature is kept.
#[derive(Debug)]
pub struct TsaFront {
    /// Issues tokens.
    pub authority: tsa::Authority,
    /// Keeps the keyless signature of each token by serial.
    pub store: Box<dyn TokenStore>,
}

#[derive(Debug)]
struct AppState {
    backend: Backend,
    auth: PduAuth,
    tsa: Option<Arc<TsaFront>>,
    /// The client ids put in requests, made once per router and cloned into each request.
    clients: ClientIds,
}

/// The client id of each kind of request.
#[derive(Debug)]
struct ClientIds {
    /// Aggregator PDUs: the login id they are authenticated with.
    pdu: ClientId,
    /// [`JSON_CLIENT_ID`].
    json: ClientId,
    /// [`TSA_CLIENT_ID`].
    tsa: ClientId,
}

impl AppState {
    /// The calendar, or the 404 a child aggregator answers on calendar routes.
    // The error is the answer itself, as axum handlers return it; it is built once, on a path
    // that ends the request.
    #[allow(clippy::result_large_err)]
    fn calendar(&self) -> Result<&Handle, Response> {
        self.backend
            .calendar()
            .ok_or_else(|| problem(StatusCode::NOT_FOUND, NO_CALENDAR.to_owned()))
    }
}

impl ClientIds {
    fn new(auth: &PduAuth) -> Self {
        ClientIds {
            pdu: auth.login_id.as_str().into(),
            json: JSON_CLIENT_ID.into(),
            tsa: TSA_CLIENT_ID.into(),
        }
    }
}

/// What a child aggregator answers on the calendar's routes.
const NO_CALENDAR: &str = "this aggregator has no calendar; ask its parent";

/// The router; bind it wherever the caller chooses.
pub fn router(backend: impl Into<Backend>, auth: PduAuth) -> Router {
    router_with_tsa(backend, auth, None)
}

/// The router with the RFC 3161 routes answered by `tsa` (404 without it).
pub fn router_with_tsa(
    backend: impl Into<Backend>,
    auth: PduAuth,
    tsa: Option<Arc<TsaFront>>,
) -> Router {
    let backend = backend.into();
    Router::new()
        .route("/", post(pdu))
        .route("/extend", post(extender_pdu))
        .route("/sign", post(sign_json))
        .route("/publications", get(publications))
        .route("/publications/latest", get(latest))
        .route("/publications.bin", get(publications_file))
        .route("/certificate", get(certificate))
        .route("/extend/{time}", get(extend))
        .route("/tsa", post(tsa_query))
        .route("/tsa/certificate.pem", get(tsa_certificate))
        .route("/tsa/{file}", get(tsa_proof))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(AppState {
            backend,
            clients: ClientIds::new(&auth),
            auth,
            tsa,
        }))
}

async fn tsa_query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(front) = state.tsa.clone() else {
        return problem(
            StatusCode::NOT_FOUND,
            "this service has no RFC 3161 front end".to_owned(),
        );
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case(TIMESTAMP_QUERY) {
        let message = format!("content type {content_type:?} is not {TIMESTAMP_QUERY}");
        return problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
    }
    let (secs, millis) = crate::service::now_millis();
    let issuing = Arc::clone(&front);
    let issued =
        tokio::task::spawn_blocking(move || issuing.authority.respond(&body, secs, millis)).await;
    let token = match issued {
        Ok(Ok(token)) => token,
        Ok(Err(rejection)) => return tsa_reply(rejection),
        Err(_) => return tsa_failure("the issuing task failed"),
    };
    let hash = match HashAlgorithm::Sha256.hash(&[&token.der]) {
        Ok(hash) => hash,
        Err(_) => return tsa_failure("cannot hash the token"),
    };
    let signature = match state
        .backend
        .sign(Request {
            hash: InputHash::from(&hash),
            level: 0,
            client_id: state.clients.tsa.clone(),
        })
        .await
    {
        Ok(signature) => signature,
        Err(e) => {
            tracing::warn!(serial = %token.serial, error = %e, "time-stamp token not anchored in the calendar; not answered");
            return tsa_failure(
                "the token cannot be anchored in the keyless calendar now; try again",
            );
        }
    };
    let stored = match signature.encode() {
        Ok(bytes) => {
            tokio::task::spawn_blocking(move || {
                front
                    .store
                    .put(token.serial, &bytes)
                    .map_err(|e| e.to_string())
            })
            .await
        }
        Err(e) => Ok(Err(e.to_string())),
    };
    match stored {
        Ok(Ok(())) => {
            tracing::debug!(serial = %token.serial, aggregation_time = signature.signing_time(), "time-stamp token issued");
            tsa_reply(tsa::granted(&token.der))
        }
        Ok(Err(e)) => {
            tracing::error!(serial = %token.serial, error = %e, "cannot store the keyless signature of a time-stamp token");
            tsa_failure("the token's keyless signature cannot be stored")
        }
        Err(_) => tsa_failure("the storing task failed"),
    }
}

async fn tsa_proof(State(state): State<Arc<AppState>>, Path(file): Path<String>) -> Response {
    let Some(front) = state.tsa.clone() else {
        return problem(
            StatusCode::NOT_FOUND,
            "this service has no RFC 3161 front end".to_owned(),
        );
    };
    let Some(serial) = file.strip_suffix(".ksig").and_then(tsa::Serial::from_hex) else {
        return problem(
            StatusCode::NOT_FOUND,
            "expected /tsa/{serial in hex}.ksig".to_owned(),
        );
    };
    match tokio::task::spawn_blocking(move || front.store.get(serial)).await {
        Ok(Ok(Some(bytes))) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(Ok(None)) => problem(
            StatusCode::NOT_FOUND,
            format!("no token with serial 0x{serial}"),
        ),
        Ok(Err(e)) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("token store: {e}"),
        ),
        Err(_) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the reading task failed".to_owned(),
        ),
    }
}

async fn tsa_certificate(State(state): State<Arc<AppState>>) -> Response {
    match &state.tsa {
        Some(front) => {
            let pem = backbone_hsm::cert::pem("CERTIFICATE", front.authority.certificate());
            ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response()
        }
        None => problem(
            StatusCode::NOT_FOUND,
            "this service has no RFC 3161 front end".to_owned(),
        ),
    }
}

fn tsa_reply(der: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, TIMESTAMP_REPLY)], der).into_response()
}

fn tsa_failure(text: &str) -> Response {
    tsa_reply(tsa::rejection(FailureInfo::SystemFailure, text))
}

async fn sign_json(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request: SignRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("body is not a sign request: {e}"),
            );
        }
    };
    let hash = match hex_decode(&request.hash)
        .and_then(|b| InputHash::from_bytes(&b).map_err(|e| e.to_string()))
    {
        Ok(hash) => hash,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("hash is not a hex imprint: {e}"),
            );
        }
    };
    let request = Request {
        hash,
        level: request.level,
        client_id: state.clients.json.clone(),
    };
    match state.backend.sign(request).await {
        Ok(signature) => match signature.encode() {
            Ok(bytes) => {
                let body = SignResponse {
                    signature: openssl::base64::encode_block(&bytes),
                    aggregation_time: signature.signing_time(),
                };
                axum::Json(body).into_response()
            }
            Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Err(e) => error_response(&e),
    }
}

async fn publications(State(state): State<Arc<AppState>>) -> Response {
    let handle = match state.calendar() {
        Ok(handle) => handle,
        Err(response) => return response,
    };
    match handle.publications() {
        Ok(list) => {
            axum::Json(list.iter().map(publication_json).collect::<Vec<_>>()).into_response()
        }
        Err(e) => error_response(&e),
    }
}

async fn publications_file(State(state): State<Arc<AppState>>) -> Response {
    let handle = match state.calendar() {
        Ok(handle) => handle,
        Err(response) => return response,
    };
    match handle.publications_file() {
        Some(bytes) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes.to_vec(),
        )
            .into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            "this service keeps no publications file".to_owned(),
        ),
    }
}

async fn latest(State(state): State<Arc<AppState>>) -> Response {
    let handle = match state.calendar() {
        Ok(handle) => handle,
        Err(response) => return response,
    };
    match handle.publications() {
        Ok(list) => match list.last() {
            Some(p) => axum::Json(publication_json(p)).into_response(),
            None => problem(StatusCode::NOT_FOUND, "no publication yet".to_owned()),
        },
        Err(e) => error_response(&e),
    }
}

async fn certificate(State(state): State<Arc<AppState>>) -> Response {
    let record = match state.calendar() {
        Ok(handle) => handle.certificate(),
        Err(response) => return response,
    };
    let body = serde_json::json!({
        "id": hex(&record.id),
        "certificate": openssl::base64::encode_block(&record.certificate),
    });
    axum::Json(body).into_response()
}

async fn extend(State(state): State<Arc<AppState>>, Path(time): Path<u64>) -> Response {
    let handle = match state.calendar() {
        Ok(handle) => handle,
        Err(response) => return response,
    };
    let encoded = handle.extend(time, None).and_then(|chain| {
        let mut out = Encoder::new();
        chain.encode(&mut out)?;
        Ok(out.finish())
    });
    match encoded {
        Ok(bytes) => axum::Json(
            serde_json::json!({ "calendar_chain": openssl::base64::encode_block(&bytes) }),
        )
        .into_response(),
        Err(e) => error_response(&e),
    }
}

fn pdu_response(bytes: Vec<u8>, status: StatusCode) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/ksi-response")],
        bytes,
    )
        .into_response()
}

/// `POST /`: an aggregator or an extender request PDU, told apart by the outer tag.
async fn pdu(state: State<Arc<AppState>>, body: Bytes) -> Response {
    let tag = backbone_timestamping_verify::tlv::decode(&body).map(|t| t.tag());
    if tag.is_ok_and(|t| t == TAG_EXTENDER_REQUEST) {
        return extender_pdu(state, body).await;
    }
    aggregator_pdu(state, body).await
}

/// `POST /extend`, or `POST /` with tag 0x320: one calendar chain per request payload.
async fn extender_pdu(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = match ExtenderRequest::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            return pdu_response(
                error_pdu(
                    TAG_EXTENDER_RESPONSE,
                    STATUS_INVALID_REQUEST,
                    &e.to_string(),
                ),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let login_ok = request
        .header
        .as_ref()
        .is_some_and(|h| h.login_id.as_bytes() == state.auth.login_id.as_bytes());
    if !login_ok
        || request
            .check_mac(&state.auth.key, HashAlgorithm::Sha256)
            .is_err()
    {
        let bytes = error_pdu(
            TAG_EXTENDER_RESPONSE,
            STATUS_AUTHENTICATION_FAILURE,
            "unknown login id or wrong HMAC",
        );
        return pdu_response(bytes, StatusCode::UNAUTHORIZED);
    }
    if request.payloads.len() > MAX_REQUESTS_PER_PDU {
        let message = format!(
            "{} requests in one PDU; at most {MAX_REQUESTS_PER_PDU}",
            request.payloads.len()
        );
        return pdu_response(
            error_pdu(TAG_EXTENDER_RESPONSE, STATUS_INVALID_REQUEST, &message),
            StatusCode::BAD_REQUEST,
        );
    }
    let Some(handle) = state.backend.calendar().cloned() else {
        return pdu_response(
            error_pdu(TAG_EXTENDER_RESPONSE, STATUS_INVALID_REQUEST, NO_CALENDAR),
            StatusCode::NOT_FOUND,
        );
    };
    let payloads = request.payloads.clone();
    // Each chain is up to 64 calendar reads: off the async threads.
    let answered = tokio::task::spawn_blocking(move || {
        let now = crate::service::now();
        payloads
            .iter()
            .map(|p| crate::extender::answer(&handle, p, now))
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(payloads) = answered else {
        let bytes = error_pdu(
            TAG_EXTENDER_RESPONSE,
            STATUS_INTERNAL_ERROR,
            "extend task failed",
        );
        return pdu_response(bytes, StatusCode::INTERNAL_SERVER_ERROR);
    };
    let header = Header {
        login_id: state.auth.login_id.as_str().into(),
        instance_id: request.header.as_ref().and_then(|h| h.instance_id),
        message_id: request.header.as_ref().and_then(|h| h.message_id),
    };
    let mut response = ExtenderResponse::new(header, payloads);
    if request.config.is_some() {
        match crate::extender::config(state.backend.calendar().and_then(Handle::head)) {
            Ok(config) => response.config = Some(config),
            Err(e) => tracing::error!(error = %e, "cannot encode the extender configuration"),
        }
    }
    match response.encode(&state.auth.key, HashAlgorithm::Sha256) {
        Ok(bytes) => pdu_response(bytes, StatusCode::OK),
        Err(e) => pdu_response(
            error_pdu(TAG_EXTENDER_RESPONSE, STATUS_INTERNAL_ERROR, &e.to_string()),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    }
}

async fn aggregator_pdu(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let error_pdu = |status, message: &str| error_pdu(TAG_AGGREGATOR_RESPONSE, status, message);
    let request = match AggregatorRequest::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            return pdu_response(
                error_pdu(STATUS_INVALID_REQUEST, &e.to_string()),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let login_ok = request
        .header
        .as_ref()
        .is_some_and(|h| h.login_id.as_bytes() == state.auth.login_id.as_bytes());
    if !login_ok
        || request
            .check_mac(&state.auth.key, HashAlgorithm::Sha256)
            .is_err()
    {
        let bytes = error_pdu(
            STATUS_AUTHENTICATION_FAILURE,
            "unknown login id or wrong HMAC",
        );
        return pdu_response(bytes, StatusCode::UNAUTHORIZED);
    }
    if request.payloads.len() > MAX_REQUESTS_PER_PDU {
        let message = format!(
            "{} requests in one PDU; at most {MAX_REQUESTS_PER_PDU}",
            request.payloads.len()
        );
        return pdu_response(
            error_pdu(STATUS_INVALID_REQUEST, &message),
            StatusCode::BAD_REQUEST,
        );
    }
    let answers = PduAnswers::new(&state, &request);
    // One submission for the whole PDU; a payload whose level does not fit a byte is refused
    // here and never submitted.
    let requests: Vec<Request> = request
        .payloads
        .iter()
        .zip(&answers.requests)
        .filter_map(|(p, (_, level))| {
            level.map(|level| Request {
                hash: InputHash::from(&p.hash),
                level,
                client_id: state.clients.pdu.clone(),
            })
        })
        .collect();
    let submitted = requests.len();
    // The response is written where the round is answered, in the order the PDUs came.
    match state
        .backend
        .sign_all_with(requests, move |placed| answers.respond(placed))
        .await
    {
        Ok(response) => response,
        // Shutting down: every request is answered with the error, as a failed round's are.
        Err(e) => PduAnswers::new(&state, &request).respond(vec![Err(e); submitted]),
    }
}

/// What an aggregator response PDU needs besides the answers: each payload's request id and
/// level (`None`: above 255, refused here), the header and the key.
struct PduAnswers {
    state: Arc<AppState>,
    requests: Vec<(u64, Option<u8>)>,
    header: Header,
}

impl PduAnswers {
    fn new(state: &Arc<AppState>, request: &AggregatorRequest) -> Self {
        let requests = request
            .payloads
            .iter()
            .map(|p| {
                (
                    p.request_id,
                    p.level.map_or(Some(0), |l| u8::try_from(l).ok()),
                )
            })
            .collect();
        let header = Header {
            login_id: state.auth.login_id.as_str().into(),
            instance_id: request.header.as_ref().and_then(|h| h.instance_id),
            message_id: request.header.as_ref().and_then(|h| h.message_id),
        };
        PduAnswers {
            state: Arc::clone(state),
            requests,
            header,
        }
    }

    /// The response PDU: each answer written straight into it, the request's own chain encoded,
    /// the round's calendar chain and record copied from its one encoding; then sealed.
    fn respond(self, placed: Vec<Placed>) -> Response {
        let error_pdu = |status, message: &str| error_pdu(TAG_AGGREGATOR_RESPONSE, status, message);
        let mut placed = placed.into_iter();
        let mut payloads = Encoder::with_capacity(self.requests.len() * 2048);
        for (request_id, level) in self.requests {
            let answer = match level {
                None => Err(Arc::new(Error::Request("input level above 255".to_owned()))),
                Some(_) => placed.next().unwrap_or_else(|| {
                    Err(Arc::new(Error::Unreachable("a request without its answer")))
                }),
            };
            let written = match answer {
                Ok((round, index)) => {
                    let mut failure = None;
                    let encoded =
                        AggregationResponse::encode_signed(request_id, &mut payloads, |e| {
                            round.encode_signature(index, e).map_err(|error| {
                                failure = Some(error);
                                backbone_timestamping_verify::Error::Unreachable(
                                    "a signed round could not write a signature",
                                )
                            })
                        });
                    encoded.map_err(|e| failure.unwrap_or(Error::Ksi(e)))
                }
                Err(e) => refusal(request_id, &e)
                    .encode(&mut payloads)
                    .map_err(Error::Ksi),
            };
            if let Err(e) = written {
                return pdu_response(
                    error_pdu(STATUS_INTERNAL_ERROR, &e.to_string()),
                    StatusCode::INTERNAL_SERVER_ERROR,
                );
            }
        }
        match pdu::seal::<AggregationResponse>(
            &self.header,
            &payloads.finish(),
            &self.state.auth.key,
            HashAlgorithm::Sha256,
        ) {
            Ok(bytes) => pdu_response(bytes, StatusCode::OK),
            Err(e) => pdu_response(
                error_pdu(STATUS_INTERNAL_ERROR, &e.to_string()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        }
    }
}

/// The response payload of a request that was refused or whose round failed.
fn refusal(request_id: u64, error: &Error) -> AggregationResponse {
    AggregationResponse {
        request_id,
        status: status_of(error),
        error_message: Some(error.to_string().as_str().into()),
        aggregation_chains: Vec::new(),
        calendar_chain: None,
        publication_record: None,
        calendar_auth_record: None,
        rfc3161_record: None,
    }
}

/// The KSI status of a request's failure.
fn status_of(error: &Error) -> u64 {
    match error {
        Error::Request(_) => STATUS_INVALID_PAYLOAD,
        Error::Pushback { .. } => STATUS_TOO_MANY_REQUESTS,
        Error::Parent {
            source: ParentError::Timeout(_),
            ..
        } => STATUS_UPSTREAM_TIMEOUT,
        Error::Parent { .. } => STATUS_UPSTREAM_ERROR,
        _ => STATUS_INTERNAL_ERROR,
    }
}

/// An error-only response PDU (`tag`: aggregator or extender response): no header and no MAC,
/// as KSI allows for errors.
fn error_pdu(tag: u16, status: u64, message: &str) -> Vec<u8> {
    let mut out = Encoder::new();
    let built = out.nested(tag, Flags::NONE, |e| {
        e.nested(0x03, Flags::NONE, |e| {
            e.u64(0x04, status)?;
            e.string(0x05, &message.into())
        })
    });
    match built {
        Ok(()) => out.finish(),
        Err(_) => Vec::new(),
    }
}

fn error_response(error: &Error) -> Response {
    let status = match error {
        Error::Request(_) => StatusCode::BAD_REQUEST,
        Error::Pushback { .. } | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        Error::NotInCalendar { .. } => StatusCode::NOT_FOUND,
        Error::Parent {
            source: ParentError::Timeout(_),
            ..
        } => StatusCode::GATEWAY_TIMEOUT,
        Error::Parent { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = problem(status, error.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

fn problem(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn publication_json(p: &PublicationData) -> PublicationJson {
    PublicationJson {
        time: p.time,
        hash: p.hash.to_hex(),
        publication_string: p.to_publication_string(),
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes hex (an optional `0x` prefix allowed).
///
/// # Errors
///
/// A message for odd lengths or non-hex characters.
pub fn hex_decode(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let text = text.strip_prefix("0x").unwrap_or(text);
    if !text.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", text.len()));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("not hex at position {i}"))
        })
        .collect()
}
