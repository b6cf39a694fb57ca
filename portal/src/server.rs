//! The portal's HTTP server: routes, the session and CSRF checks, and the security headers every
//! answer carries.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | welcome and sign-in, or on to the history |
//! | `GET /login`, `GET /oidc/callback` | OpenID Connect sign-in |
//! | `POST /logout` | sign out (CSRF) |
//! | `GET /history?from&to&institution&purpose&emergency&mine&page` | the access history |
//! | `GET /entries/{key}` | one access, its integrity and proofs |
//! | `GET /entries/{key}/proof/{n}.ksig`, `.json` | a proof to download |
//! | `GET`, `POST /entries/{key}/report` | report a suspicious access (CSRF) |
//! | `GET /reports` | the person's reports and their status |
//! | `GET /export.csv`, `GET /export.fhir.json` | exports, with the history's filters |
//! | `GET /lang?to&back` | switch language |
//!
//! Each view of a person's data is written to the view log before it is shown.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use backbone_registry::client::ConfClient;

use crate::Error;
use crate::history::{Agencies, BackboneConfig, Entry, Filter, History};
use crate::html::{Page, SignedIn};
use crate::i18n::{Lang, T};
use crate::oidc::client::{OidcClient, OidcConfig};
use crate::pages;
use crate::proof::{self, Trust};
use crate::reports::{self, Report, ReportStore, Status};
use crate::session::{self, COOKIE, LANG_COOKIE, Lookup, Session, Sessions, constant_time_eq};
use crate::viewlog::ViewLog;

/// Idle time after which a session ends: 15 minutes, as public e-services commonly use.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a gathered history is reused within one session before the agencies are asked
/// again: long enough to page and filter without asking every agency each time.
pub const DEFAULT_HISTORY_CACHE: Duration = Duration::from_secs(30);

/// The Content Security Policy of every page: nothing but our own stylesheet, no script at all.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Everything the portal needs to run.
#[derive(Clone, Debug)]
pub struct PortalConfig {
    /// Where the portal reaches the agencies.
    pub backbone: BackboneConfig,
    /// How it signs people in.
    pub oidc: OidcConfig,
    /// Where reports and the view log are kept.
    pub data_dir: std::path::PathBuf,
    /// Idle time after which a session ends.
    pub idle_timeout: Duration,
    /// How long a gathered history is reused within a session.
    pub history_cache: Duration,
}

/// The running portal's state.
#[derive(Debug)]
pub struct Portal {
    config: PortalConfig,
    sessions: Sessions,
    oidc: OidcClient,
    agencies: Agencies,
    reports: ReportStore,
    views: ViewLog,
    trust: Trust,
}

// === impl Portal ===

impl Portal {
    /// A portal reading the global configuration from `conf` and checking proofs with `trust`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] or [`Error::Storage`] when it cannot start.
    pub fn new(config: PortalConfig, conf: Arc<ConfClient>, trust: Trust) -> Result<Portal, Error> {
        let oidc = OidcClient::new(config.oidc.clone(), config.backbone.timeout)?;
        let agencies = Agencies::new(config.backbone.clone(), conf);
        let reports = ReportStore::open(config.data_dir.join("reports"))?;
        let views = ViewLog::open(&config.data_dir)?;
        Ok(Portal {
            sessions: Sessions::new(config.idle_timeout),
            oidc,
            agencies,
            reports,
            views,
            trust,
            config,
        })
    }

    /// The report store.
    pub fn reports(&self) -> &ReportStore {
        &self.reports
    }

    /// The view log.
    pub fn views(&self) -> &ViewLog {
        &self.views
    }
}

/// The portal's routes with the security headers on every answer.
pub fn router(portal: Arc<Portal>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/oidc/callback", get(callback))
        .route("/logout", post(logout))
        .route("/history", get(history))
        .route("/entries/{key}", get(entry))
        .route("/entries/{key}/proof/{file}", get(proof_file))
        .route("/entries/{key}/report", get(report_form).post(report_send))
        .route("/reports", get(reports_page))
        .route("/export.csv", get(export_csv))
        .route("/export.fhir.json", get(export_fhir))
        .route("/lang", get(switch_language))
        .route("/static/portal.css", get(stylesheet))
        .route("/calendar-certificate.der", get(calendar_certificate))
        .route("/live", get(|| async { "live\n" }))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(portal)
}

/// Serves `router` on `listener` until `shutdown` completes.
///
/// # Errors
///
/// [`Error::Listen`] when the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    portal: Arc<Portal>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    backbone_server::serve_router(
        listener,
        router(portal),
        backbone_server::Limits::default(),
        shutdown,
    )
    .await
    .map_err(|source| Error::Listen { addr, source })
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let css = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/css"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    if !css {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// What one request brings: its language, its session, and whether one just expired.
struct Ctx {
    lang: Lang,
    session: Option<Session>,
    expired: bool,
    here: String,
}

impl Ctx {
    fn new(portal: &Portal, headers: &HeaderMap, uri: &Uri) -> Ctx {
        let cookies = headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let lang = session::cookie(cookies, LANG_COOKIE)
            .and_then(Lang::parse)
            .unwrap_or_else(|| {
                Lang::from_accept_language(
                    headers
                        .get(header::ACCEPT_LANGUAGE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default(),
                )
            });
        let (session, expired) =
            match session::cookie(cookies, COOKIE).map(|id| portal.sessions.lookup(id)) {
                Some(Lookup::Active(session)) => (Some(session), false),
                Some(Lookup::Expired) => (None, true),
                Some(Lookup::Missing) | None => (None, false),
            };
        let here = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        Ctx {
            lang,
            session,
            expired,
            here,
        }
    }

    /// The signed-in session and its person's subject, or the redirect to sign in.
    fn signed_in(&self) -> Result<(&Session, &str), Response> {
        match &self.session {
            Some(session) => match &session.person {
                Some(person) => Ok((session, person.subject.as_str())),
                None => Err(redirect("/")),
            },
            None if self.expired => Err(redirect("/?expired=1")),
            None => Err(redirect("/")),
        }
    }

    fn page(&self, status: StatusCode, title: &str, main: String) -> Response {
        let signed_in = self.session.as_ref().and_then(|s| {
            s.person.as_ref().map(|p| SignedIn {
                name: p.name(),
                csrf: s.csrf.clone(),
            })
        });
        let page = Page {
            lang: self.lang,
            title: title.to_owned(),
            here: &self.here,
            signed_in,
            main,
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page.render(),
        )
            .into_response()
    }

    fn problem(&self, status: StatusCode, text: T) -> Response {
        self.page(
            status,
            self.lang.t(T::ErrorTitle),
            pages::problem(self.lang, text),
        )
    }
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn home(State(portal): State<Arc<Portal>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = Ctx::new(&portal, &headers, &uri);
    if ctx.signed_in().is_ok() {
        return redirect("/history");
    }
    let notice = match uri.query().unwrap_or_default() {
        "signed_out=1" => Some(T::SignedOut),
        "expired=1" => Some(T::SessionExpired),
        "failed=1" => Some(T::SignInFailed),
        _ if ctx.expired => Some(T::SessionExpired),
        _ => None,
    };
    ctx.page(
        StatusCode::OK,
        ctx.lang.t(T::WelcomeTitle),
        pages::welcome(ctx.lang, notice),
    )
}

async fn login(State(portal): State<Arc<Portal>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = Ctx::new(&portal, &headers, &uri);
    if ctx.signed_in().is_ok() {
        return redirect("/history");
    }
    let (session, fresh) = match &ctx.session {
        Some(session) => (session.clone(), false),
        None => (portal.sessions.create(), true),
    };
    let (pending, url) = match portal.oidc.begin(ctx.lang).await {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in could not start");
            return ctx.problem(StatusCode::SERVICE_UNAVAILABLE, T::SignInFailed);
        }
    };
    portal
        .sessions
        .update(&session.id, |s| s.login = Some(pending));
    let response = redirect(&url);
    if fresh {
        with_cookie(response, &session::set_cookie(COOKIE, &session.id, None))
    } else {
        response
    }
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(State(portal): State<Arc<Portal>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = Ctx::new(&portal, &headers, &uri);
    let Some(session) = &ctx.session else {
        return redirect(if ctx.expired {
            "/?expired=1"
        } else {
            "/?failed=1"
        });
    };
    let Some(login) = session.login.clone() else {
        return redirect("/?failed=1");
    };
    portal.sessions.update(&session.id, |s| s.login = None);
    let query: CallbackQuery = serde_urlencoded::from_str(uri.query().unwrap_or_default())
        .unwrap_or(CallbackQuery {
            code: None,
            state: None,
            error: None,
        });
    let (Some(code), Some(state), None) = (query.code, query.state, query.error) else {
        return redirect("/?failed=1");
    };
    let now = now_ms() / 1000;
    match portal.oidc.finish(&login, &state, &code, now).await {
        Ok(person) => {
            let signed = portal.sessions.sign_in(&session.id, person);
            with_cookie(
                redirect("/history"),
                &session::set_cookie(COOKIE, &signed.id, None),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "sign-in refused");
            redirect("/?failed=1")
        }
    }
}

/// The session if the form's CSRF token is its own.
fn check_csrf<'a>(ctx: &'a Ctx, form: &[(String, String)]) -> Option<&'a Session> {
    let session = ctx.session.as_ref()?;
    let token = form
        .iter()
        .find(|(name, _)| name == "csrf")
        .map(|(_, v)| v.as_str())?;
    constant_time_eq(token.as_bytes(), session.csrf.as_bytes()).then_some(session)
}

async fn logout(
    State(portal): State<Arc<Portal>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let ctx = Ctx::new(&portal, &headers, &uri);
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let Some(session) = check_csrf(&ctx, &form) else {
        return if ctx.session.is_none() {
            redirect("/")
        } else {
            ctx.problem(StatusCode::FORBIDDEN, T::BadForm)
        };
    };
    portal.sessions.remove(&session.id);
    with_cookie(
        redirect("/?signed_out=1"),
        &session::set_cookie(COOKIE, "", Some(0)),
    )
}

/// The person's history: the session's if fresh, else asked of the agencies.
async fn load_history(portal: &Portal, session: &Session, subject: &str) -> Arc<History> {
    if let Some((at, history)) = &session.history
        && at.elapsed() < portal.config.history_cache
    {
        return Arc::clone(history);
    }
    let history = Arc::new(portal.agencies.history(subject).await);
    portal.sessions.update(&session.id, |s| {
        s.history = Some((Instant::now(), Arc::clone(&history)))
    });
    history
}

/// Records a view; when the log cannot be written, nothing is shown.
fn record_view(
    portal: &Portal,
    ctx: &Ctx,
    subject: &str,
    what: &str,
    entry: Option<&str>,
) -> Result<(), Response> {
    portal
        .views
        .record(subject, what, entry, now_ms())
        .map_err(|e| {
            tracing::error!(error = %e, "view log");
            ctx.problem(StatusCode::SERVICE_UNAVAILABLE, T::ErrorTitle)
        })
}

async fn history(State(portal): State<Arc<Portal>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = Ctx::new(&portal, &headers, &uri);
    let (session, subject) = match ctx.signed_in() {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let (filter, page) = Filter::parse(uri.query());
    let all = load_history(&portal, session, subject).await;
    if let Err(response) = record_view(&portal, &ctx, subject, "history", None) {
        return response;
    }
    ctx.page(
        StatusCode::OK,
        ctx.lang.t(T::HistoryTitle),
        pages::history(ctx.lang, &all, &filter, page),
    )
}

/// The signed-in person's entry `key`, or the page to answer with.
async fn find_entry(
    portal: &Portal,
    ctx: &Ctx,
    key: &str,
    view: &str,
) -> Result<(Entry, String), Response> {
    let (session, subject) = ctx.signed_in()?;
    let all = load_history(portal, session, subject).await;
    // Only the person's own history is searched: another person's key finds nothing here.
    let Some(entry) = all.entries.iter().find(|e| e.key == key).cloned() else {
        return Err(ctx.problem(StatusCode::NOT_FOUND, T::NotFound));
    };
    record_view(portal, ctx, subject, view, Some(key))?;
    Ok((entry, subject.to_owned()))
}

async fn entry(
    State(portal): State<Arc<Portal>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let ctx = Ctx::new(&portal, &headers, &uri);
    let (entry, _) = match find_entry(&portal, &ctx, &key, "entry").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let integrity: Vec<_> = entry
        .records
        .iter()
        .map(|r| proof::check(&r.record, r.proof.as_ref(), &portal.trust))
        .collect();
    let key_based = !portal.trust.certificates.is_empty();
    ctx.page(
        StatusCode::OK,
        ctx.lang.t(T::EntryTitle),
        pages::entry(ctx.lang, &entry, &integrity, key_based),
    )
}

async fn proof_file(
    State(portal): State<Arc<Portal>>,
    Path((key, file)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let ctx = Ctx::new(&portal, &headers, &uri);
    let (index, json) = match (file.strip_suffix(".ksig"), file.strip_suffix(".json")) {
        (Some(n), _) => (n.parse::<usize>().ok(), false),
        (_, Some(n)) => (n.parse::<usize>().ok(), true),
        _ => (None, false),
    };
    let (entry, _) = match find_entry(&portal, &ctx, &key, "proof").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some((logged, proof)) = index
        .and_then(|i| entry.records.get(i))
        .and_then(|r| r.proof.as_ref().map(|p| (r, p)))
    else {
        return ctx.problem(StatusCode::NOT_FOUND, T::NotFound);
    };
    let date = crate::local_time::date(i64::try_from(entry.time_ms).unwrap_or(0));
    if json {
        let body = serde_json::json!({
            "messageId": entry.message_id, "client": entry.client, "service": entry.service, "loggedBy": logged.agency, "side": logged.side,
            "record": logged.record, "proof": proof, "imprint": proof::imprint_hex(proof),
            "verify": format!("backbone ksi verify access.ksig --hash {}", proof::imprint_hex(proof)),
        });
        let disposition = format!("attachment; filename=\"access-{date}-{key}.json\"");
        return (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            body.to_string(),
        )
            .into_response();
    }
    match proof::signature_bytes(proof) {
        Ok(bytes) => {
            let disposition = format!("attachment; filename=\"access-{date}-{key}.ksig\"");
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                bytes,
            )
                .into_response()
        }
        Err(_) => ctx.problem(StatusCode::BAD_GATEWAY, T::VerifyFailed),
    }
}

async fn report_form(
    State(portal): State<Arc<Portal>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let ctx = Ctx::new(&portal, &headers, &uri);
    let (entry, _) = match find_entry(&portal, &ctx, &key, "report-form").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let csrf = ctx
        .session
        .as_ref()
        .map(|s| s.csrf.clone())
        .unwrap_or_default();
    ctx.page(
        StatusCode::OK,
        ctx.lang.t(T::ReportTitle),
        pages::report_form(ctx.lang, &entry, &csrf, None, "", ""),
    )
}

async fn report_send(
    State(portal): State<Arc<Portal>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let ctx = Ctx::new(&portal, &headers, &uri);
    if let Err(response) = ctx.signed_in() {
        return response;
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if check_csrf(&ctx, &form).is_none() {
        return ctx.problem(StatusCode::FORBIDDEN, T::BadForm);
    }
    let (entry, subject) = match find_entry(&portal, &ctx, &key, "report").await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let field = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.replace("\r\n", "\n").trim().to_owned())
            .unwrap_or_default()
    };
    let (reason, contact) = (field("reason"), field("contact"));
    let sent = match portal.reports.open_for_subject(&subject) {
        Ok(sent) => sent,
        Err(e) => {
            tracing::error!(error = %e, "reports cannot be counted");
            return ctx.problem(StatusCode::SERVICE_UNAVAILABLE, T::ErrorTitle);
        }
    };
    let error = if sent >= reports::MAX_PER_PERSON {
        Some(T::ReportLimit)
    } else if reason.is_empty() {
        Some(T::ReportEmpty)
    } else if reason.chars().count() > reports::MAX_REASON
        || contact.chars().count() > reports::MAX_CONTACT
    {
        Some(T::ReportTooLong)
    } else {
        None
    };
    if let Some(error) = error {
        let csrf = ctx
            .session
            .as_ref()
            .map(|s| s.csrf.clone())
            .unwrap_or_default();
        return ctx.page(
            StatusCode::BAD_REQUEST,
            ctx.lang.t(T::ReportTitle),
            pages::report_form(ctx.lang, &entry, &csrf, Some(error), &reason, &contact),
        );
    }
    let report = Report {
        id: ReportStore::new_id(),
        subject,
        entry: entry.key.clone(),
        message_id: entry.message_id.clone(),
        institution: entry.institution.clone(),
        access_time_ms: entry.time_ms,
        reason,
        contact,
        created_ms: now_ms(),
        status: Status::Received,
    };
    match portal.reports.put(&report) {
        Ok(()) => redirect(&format!("/reports?sent={}", report.id)),
        Err(e) => {
            tracing::error!(error = %e, "report not stored");
            ctx.problem(StatusCode::SERVICE_UNAVAILABLE, T::ErrorTitle)
        }
    }
}

async fn reports_page(State(portal): State<Arc<Portal>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = Ctx::new(&portal, &headers, &uri);
    let subject = match ctx.signed_in() {
        Ok((_, subject)) => subject,
        Err(response) => return response,
    };
    let sent = uri.query().and_then(|q| q.strip_prefix("sent="));
    match portal.reports.for_subject(subject) {
        Ok(list) => ctx.page(
            StatusCode::OK,
            ctx.lang.t(T::ReportsTitle),
            pages::reports(ctx.lang, &list, sent),
        ),
        Err(e) => {
            tracing::error!(error = %e, "reports not readable");
            ctx.problem(StatusCode::SERVICE_UNAVAILABLE, T::ErrorTitle)
        }
    }
}

async fn export(
    portal: &Portal,
    headers: &HeaderMap,
    uri: &Uri,
    what: &str,
) -> Result<(Ctx, Vec<Entry>, String), Response> {
    let ctx = Ctx::new(portal, headers, uri);
    let (session, subject) = ctx.signed_in()?;
    let (filter, _) = Filter::parse(uri.query());
    let all = load_history(portal, session, subject).await;
    record_view(portal, &ctx, subject, what, None)?;
    let subject = subject.to_owned();
    let entries = all
        .entries
        .iter()
        .filter(|e| filter.accepts(e))
        .cloned()
        .collect();
    Ok((ctx, entries, subject))
}

async fn export_csv(State(portal): State<Arc<Portal>>, headers: HeaderMap, uri: Uri) -> Response {
    match export(&portal, &headers, &uri, "export.csv").await {
        Ok((ctx, entries, _)) => {
            let refs: Vec<&Entry> = entries.iter().collect();
            let body = format!("\u{FEFF}{}", crate::export::csv(&refs, ctx.lang));
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"access-history.csv\"",
                    ),
                ],
                body,
            )
                .into_response()
        }
        Err(response) => response,
    }
}

async fn export_fhir(State(portal): State<Arc<Portal>>, headers: HeaderMap, uri: Uri) -> Response {
    match export(&portal, &headers, &uri, "export.fhir").await {
        Ok((_, entries, subject)) => {
            let refs: Vec<&Entry> = entries.iter().collect();
            let body = crate::export::fhir(&refs, &subject, now_ms()).to_string();
            (
                [
                    (header::CONTENT_TYPE, "application/fhir+json"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"access-history.fhir.json\"",
                    ),
                ],
                body,
            )
                .into_response()
        }
        Err(response) => response,
    }
}

#[derive(serde::Deserialize)]
struct LangQuery {
    to: Option<String>,
    back: Option<String>,
}

async fn switch_language(RawQuery(query): RawQuery) -> Response {
    let query: LangQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .unwrap_or(LangQuery {
            to: None,
            back: None,
        });
    let lang = query
        .to
        .as_deref()
        .and_then(Lang::parse)
        .unwrap_or(Lang::Et);
    // Only a path on this site: never `//host` or `/\host`, which browsers treat as another site.
    let back = query
        .back
        .filter(|b| {
            b.starts_with('/')
                && !b.starts_with("//")
                && !b.starts_with("/\\")
                && !b.chars().any(char::is_control)
        })
        .unwrap_or_else(|| "/".into());
    with_cookie(
        redirect(&back),
        &session::set_cookie(LANG_COOKIE, lang.code(), Some(365 * 24 * 3600)),
    )
}

/// The calendar signing certificate the portal trusts, for `backbone ksi verify --cert`: public.
async fn calendar_certificate(State(portal): State<Arc<Portal>>) -> Response {
    match portal.trust.certificates.first() {
        Some(record) => (
            [
                (header::CONTENT_TYPE, "application/pkix-cert"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"calendar.der\"",
                ),
            ],
            record.certificate.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        pages::STYLESHEET,
    )
        .into_response()
}

async fn not_found(State(portal): State<Arc<Portal>>, headers: HeaderMap, uri: Uri) -> Response {
    let ctx = Ctx::new(&portal, &headers, &uri);
    ctx.problem(StatusCode::NOT_FOUND, T::NotFound)
}
