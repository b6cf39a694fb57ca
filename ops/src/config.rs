//! Layered configuration: built-in defaults, then an optional TOML file, then `BACKBONE_*`
//! environment variables, merged with the `config` crate and checked key by key.
//!
//! Every key is listed, with its environment name, default and doc, in [`keys`]. Problems are
//! reported with the key, the value and where it came from, all of them at once, before any socket
//! is bound or any token is opened. The PIN of a token is never part of the configuration: the
//! configuration only says where to read it ([`PinSource`]), and a `pin` key is refused.
//!
//! Tests build an [`Env`] from pairs instead of touching the process environment.

pub mod keys;
mod pin;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use backbone_hsm::config::{Config as StoreConfig, Pkcs11Config};
use config::{FileFormat, Source, Value, ValueKind};

use self::keys::Key;
pub use self::pin::PinSource;

/// Largest configuration file we read; real ones are a few hundred bytes.
pub const MAX_FILE_LEN: u64 = 1024 * 1024;

/// Longest PKCS#11 token label: the `CK_TOKEN_INFO` label field is 32 bytes.
pub const MAX_TOKEN_LABEL_LEN: usize = 32;

/// Most sessions we open on one token; past this a token only queues.
pub const MAX_SESSIONS: usize = 64;

/// Most reconnection attempts; more would hide a token that is really gone.
pub const MAX_RECONNECT_ATTEMPTS: u32 = 100;

/// The checked, effective configuration of a `backbone` process.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The key store and where its PIN comes from.
    pub hsm: HsmSettings,
    /// The admin listener.
    pub admin: AdminSettings,
    /// Logs and traces.
    pub telemetry: TelemetrySettings,
    /// Keys that were set but do not apply (a PKCS#11 key with the software backend).
    pub ignored: Vec<String>,
    origins: BTreeMap<&'static str, Origin>,
}

/// `[hsm]`: the key store.
#[derive(Clone, Debug)]
pub struct HsmSettings {
    /// The store to open, as the hsm crate takes it.
    pub store: StoreConfig,
    /// Where the user PIN is read from (PKCS#11 only).
    pub pin: PinSource,
}

/// `[admin]`: the listener for `/metrics`, `/live` and `/ready`.
#[derive(Clone, Debug)]
pub struct AdminSettings {
    /// Address to bind.
    pub listen: SocketAddr,
}

/// `[telemetry]`: logs and OpenTelemetry traces.
#[derive(Clone, Debug)]
pub struct TelemetrySettings {
    /// `EnvFilter` directives.
    pub log_filter: String,
    /// Text or JSON logs.
    pub log_format: LogFormat,
    /// OTLP HTTP endpoint; traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans.
    pub service_name: String,
}

/// How logs are written to standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where a value came from, for error messages and `backbone config check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// The environment variables a process sees; tests build one from pairs.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_LEN`].
    #[error("configuration file {path} is {len} bytes, more than the limit of {MAX_FILE_LEN}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The file is not valid TOML, or a layer could not be merged.
    #[error("cannot parse the configuration from {origin}")]
    Syntax {
        /// The file or environment variable.
        origin: String,
        /// The parser's complaint.
        source: Box<config::ConfigError>,
    },
    /// One or more keys were refused.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

/// One refused key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key path (or the environment variable for unknown variables).
    pub key: String,
    /// The value, when it may be shown; `None` for secrets and missing keys.
    pub value: Option<String>,
    /// Where it came from.
    pub origin: Origin,
    /// Why it was refused.
    pub reason: String,
}

/// Reads the file (if any) and the environment, merges them and checks every key.
///
/// # Errors
///
/// [`ConfigError`] naming each refused key with its value and the reason.
pub fn load(file: Option<&Path>, env: &Env) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(config::File::from_str(&read_file(path)?, FileFormat::Toml));
    }
    let mut problems = Vec::new();
    let mut from_env = BTreeMap::new();
    for (name, value) in env.config_vars() {
        match keys::by_env(name) {
            Some(key) => {
                builder = builder
                    .set_override(key.path, value.to_owned())
                    .map_err(|source| ConfigError::Syntax {
                        origin: format!("environment variable {name}"),
                        source: Box::new(source),
                    })?;
                from_env.insert(key.path, Origin::Env(key.env.to_owned()));
            }
            None => problems.push(unknown_env(name)),
        }
    }
    let file_origin = || file.map_or(Origin::Default, |p| Origin::File(p.to_owned()));
    let merged = builder
        .build()
        .and_then(|c| c.collect())
        .map_err(|source| ConfigError::Syntax {
            origin: file.map_or_else(
                || "the environment".to_owned(),
                |p| format!("file {}", p.display()),
            ),
            source: Box::new(source),
        })?;
    let mut raw = Raw {
        values: BTreeMap::new(),
        origins: BTreeMap::new(),
    };
    flatten("", &merged, &mut |path, value| match keys::by_path(&path) {
        Some(key) => {
            let origin = from_env.get(key.path).cloned().unwrap_or_else(file_origin);
            match scalar(value) {
                Some(text) => {
                    raw.values.insert(key.path, text);
                    raw.origins.insert(key.path, origin);
                }
                None => problems.push(Problem {
                    key: path,
                    value: None,
                    origin,
                    reason: "expected a single value, found a table or a list".to_owned(),
                }),
            }
        }
        None => problems.push(refuse_unknown(path, file_origin())),
    });
    let settings = raw.check(&mut problems);
    match settings {
        Some(settings) if problems.is_empty() => Ok(settings),
        _ => Err(ConfigError::Invalid(problems)),
    }
}

// === impl Settings ===

impl Settings {
    /// Where the value of `key` came from.
    pub fn origin(&self, key: &Key) -> &Origin {
        self.origins.get(key.path).unwrap_or(&Origin::Default)
    }

    /// The effective configuration as TOML, with where each value came from as a comment. Holds no
    /// secret: the PIN source is shown, never the PIN, and credentials in URLs are redacted.
    pub fn to_toml(&self) -> String {
        let text = |s: &str| toml::Value::String(s.to_owned());
        let path = |p: &Path| toml::Value::String(p.display().to_string());
        let mut hsm = Vec::new();
        match &self.hsm.store {
            StoreConfig::Software { key_dir } => {
                hsm.push((keys::HSM_BACKEND, text("software")));
                hsm.push((keys::HSM_KEY_DIR, path(key_dir)));
            }
            StoreConfig::Pkcs11(p) => {
                let sessions = i64::try_from(p.sessions).unwrap_or(i64::MAX);
                hsm.push((keys::HSM_BACKEND, text("pkcs11")));
                hsm.push((keys::HSM_MODULE, path(&p.module)));
                hsm.push((keys::HSM_TOKEN_LABEL, text(&p.token_label)));
                hsm.push((keys::HSM_SESSIONS, toml::Value::Integer(sessions)));
                hsm.push((
                    keys::HSM_RECONNECT_ATTEMPTS,
                    toml::Value::Integer(p.reconnect_attempts.into()),
                ));
            }
        }
        match &self.hsm.pin {
            PinSource::File(file) => hsm.push((keys::HSM_PIN_FILE, path(file))),
            PinSource::Env(name) => hsm.push((keys::HSM_PIN_ENV, text(name))),
        }
        let telemetry = &self.telemetry;
        let mut tel = vec![
            (keys::TELEMETRY_LOG_FILTER, text(&telemetry.log_filter)),
            (
                keys::TELEMETRY_LOG_FORMAT,
                text(telemetry.log_format.name()),
            ),
        ];
        if let Some(endpoint) = &telemetry.otlp_endpoint {
            tel.push((keys::TELEMETRY_OTLP_ENDPOINT, text(&redact_url(endpoint))));
        }
        tel.push((keys::TELEMETRY_SERVICE_NAME, text(&telemetry.service_name)));
        let sections = [
            ("hsm", hsm),
            (
                "admin",
                vec![(keys::ADMIN_LISTEN, text(&self.admin.listen.to_string()))],
            ),
            ("telemetry", tel),
        ];
        let mut out = String::new();
        for (section, entries) in sections {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[{section}]\n"));
            for (key, value) in entries {
                let name = key.path.split_once('.').map_or(key.path, |(_, name)| name);
                out.push_str(&format!("{name} = {value}  # {}\n", self.origin(&key)));
            }
        }
        if self.telemetry.otlp_endpoint.is_none() {
            out.push_str("# telemetry.otlp_endpoint is not set: traces are not exported\n");
        }
        for note in &self.ignored {
            out.push_str(&format!("# ignored: {note}\n"));
        }
        out
    }

    /// The effective configuration on one line, for the start-up log; no secrets.
    pub fn summary(&self) -> String {
        let store = match &self.hsm.store {
            StoreConfig::Software { key_dir } => format!("software keys in {}", key_dir.display()),
            StoreConfig::Pkcs11(p) => format!(
                "pkcs11 token '{}' via {} ({} sessions, {} reconnect attempts, PIN from {})",
                p.token_label,
                p.module.display(),
                p.sessions,
                p.reconnect_attempts,
                self.hsm.pin
            ),
        };
        let otlp = self
            .telemetry
            .otlp_endpoint
            .as_deref()
            .map_or_else(|| "off".to_owned(), redact_url);
        format!(
            "hsm: {store}; admin.listen: {}; log: {} ({}); otlp: {otlp}; service: {}",
            self.admin.listen,
            self.telemetry.log_filter,
            self.telemetry.log_format.name(),
            self.telemetry.service_name
        )
    }
}

// === impl LogFormat ===

impl LogFormat {
    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

// === impl Origin ===

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

// === impl Env ===

impl Env {
    /// The variables of this process that are valid UTF-8 (the only ones `backbone` reads).
    pub fn process() -> Self {
        Env::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// An environment made of exactly these pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of one variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The variables shaped like configuration keys: `BACKBONE_<SECTION>__<KEY>`.
    fn config_vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars
            .iter()
            .filter(|(name, _)| keys::path_of_env(name).is_some())
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

// === impl Problem ===

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(
                f,
                "{} = {value:?} (from {}): {}",
                self.key, self.origin, self.reason
            ),
            None => write!(f, "{} (from {}): {}", self.key, self.origin, self.reason),
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                many.iter().try_for_each(|p| write!(f, "\n  {p}"))
            }
        }
    }
}

// === Checking ===

/// The merged scalar values, as text, with where each came from.
struct Raw {
    values: BTreeMap<&'static str, String>,
    origins: BTreeMap<&'static str, Origin>,
}

impl Raw {
    fn get(&self, key: &Key) -> Option<&str> {
        self.values.get(key.path).map(String::as_str)
    }

    /// The value or the key's default.
    fn text(&self, key: &Key) -> Option<String> {
        self.get(key).or(key.default).map(str::to_owned)
    }

    fn origin(&self, key: &Key) -> Origin {
        self.origins
            .get(key.path)
            .cloned()
            .unwrap_or(Origin::Default)
    }

    fn problem(&self, key: &Key, reason: impl Into<String>) -> Problem {
        Problem {
            key: key.path.to_owned(),
            value: self.text(key),
            origin: self.origin(key),
            reason: reason.into(),
        }
    }

    /// Parses the value (or default) with `parse`, recording a problem when it fails.
    fn parse<T>(
        &self,
        key: &Key,
        problems: &mut Vec<Problem>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(key)?;
        parse(&text)
            .map_err(|reason| problems.push(self.problem(key, reason)))
            .ok()
    }

    fn required<T>(
        &self,
        key: &Key,
        why: &str,
        problems: &mut Vec<Problem>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if self.text(key).is_none() {
            problems.push(Problem {
                key: key.path.to_owned(),
                value: None,
                origin: Origin::Default,
                reason: format!("is required {why} (set it in the file or in {})", key.env),
            });
            return None;
        }
        self.parse(key, problems, parse)
    }

    fn check(self, problems: &mut Vec<Problem>) -> Option<Settings> {
        let mut ignored = Vec::new();
        let backend = self.parse(&keys::HSM_BACKEND, problems, |s| match s {
            "software" | "pkcs11" => Ok(s.to_owned()),
            _ => Err("expected \"software\" or \"pkcs11\"".to_owned()),
        });
        let software_keys = [keys::HSM_KEY_DIR];
        let pkcs11_keys = [
            keys::HSM_MODULE,
            keys::HSM_TOKEN_LABEL,
            keys::HSM_SESSIONS,
            keys::HSM_RECONNECT_ATTEMPTS,
        ];
        let store = match backend.as_deref() {
            Some("software") => {
                note_ignored(&self, &pkcs11_keys, "software", &mut ignored);
                let key_dir = self.parse(&keys::HSM_KEY_DIR, problems, non_empty_path);
                key_dir.map(|key_dir| StoreConfig::Software { key_dir })
            }
            Some(_) => {
                note_ignored(&self, &software_keys, "pkcs11", &mut ignored);
                let why = "when hsm.backend = \"pkcs11\"";
                let module = self.required(&keys::HSM_MODULE, why, problems, existing_file);
                let token_label = self.required(&keys::HSM_TOKEN_LABEL, why, problems, token_label);
                let sessions = self.parse(&keys::HSM_SESSIONS, problems, |s| {
                    in_range(s, 1, MAX_SESSIONS)
                });
                let reconnect_attempts = self.parse(&keys::HSM_RECONNECT_ATTEMPTS, problems, |s| {
                    in_range(s, 0, MAX_RECONNECT_ATTEMPTS)
                });
                match (module, token_label, sessions, reconnect_attempts) {
                    (Some(module), Some(token_label), Some(sessions), Some(reconnect_attempts)) => {
                        Some(StoreConfig::Pkcs11(Pkcs11Config {
                            module,
                            token_label,
                            sessions,
                            reconnect_attempts,
                        }))
                    }
                    _ => None,
                }
            }
            None => None,
        };
        let pin = self.pin_source(problems);
        let listen = self.parse(&keys::ADMIN_LISTEN, problems, |s| {
            s.parse::<SocketAddr>().map_err(|e| {
                format!("expected an IP address and port such as 127.0.0.1:9100 ({e})")
            })
        });
        let log_filter = self.parse(&keys::TELEMETRY_LOG_FILTER, problems, |s| {
            tracing_subscriber::EnvFilter::try_new(s)
                .map(|_| s.to_owned())
                .map_err(|e| e.to_string())
        });
        let log_format = self.parse(&keys::TELEMETRY_LOG_FORMAT, problems, |s| match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected \"text\" or \"json\"".to_owned()),
        });
        let otlp_endpoint = match self.get(&keys::TELEMETRY_OTLP_ENDPOINT) {
            None | Some("") => None,
            Some(endpoint) => otlp_endpoint(endpoint)
                .map_err(|reason| {
                    let mut problem = self.problem(&keys::TELEMETRY_OTLP_ENDPOINT, reason);
                    problem.value = Some(redact_url(endpoint));
                    problems.push(problem);
                })
                .ok(),
        };
        let service_name = self.parse(&keys::TELEMETRY_SERVICE_NAME, problems, |s| {
            if s.is_empty() || s.len() > 128 {
                return Err(format!("must be 1 to 128 characters long, got {}", s.len()));
            }
            Ok(s.to_owned())
        });
        let telemetry = TelemetrySettings {
            log_filter: log_filter?,
            log_format: log_format?,
            otlp_endpoint,
            service_name: service_name?,
        };
        Some(Settings {
            hsm: HsmSettings {
                store: store?,
                pin: pin?,
            },
            admin: AdminSettings { listen: listen? },
            telemetry,
            ignored,
            origins: self.origins,
        })
    }

    fn pin_source(&self, problems: &mut Vec<Problem>) -> Option<PinSource> {
        let file = self.parse(&keys::HSM_PIN_FILE, problems, non_empty_path);
        let env_set = self.get(&keys::HSM_PIN_ENV).is_some();
        if file.is_some() && env_set {
            problems.push(self.problem(
                &keys::HSM_PIN_FILE,
                "hsm.pin_file and hsm.pin_env are both set; set only one place to read the PIN from",
            ));
            return None;
        }
        if let Some(file) = file {
            return Some(PinSource::File(file));
        }
        self.parse(&keys::HSM_PIN_ENV, problems, |name| {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err("expected an environment variable name of A-Z, 0-9 and '_'".to_owned());
            }
            if keys::path_of_env(name).is_some() {
                return Err(
                    "names a configuration variable (BACKBONE_<SECTION>__<KEY>); pick another name"
                        .to_owned(),
                );
            }
            Ok(PinSource::Env(name.to_owned()))
        })
    }
}

fn note_ignored(raw: &Raw, keys: &[Key], backend: &str, ignored: &mut Vec<String>) {
    for key in keys.iter().filter(|k| raw.get(k).is_some()) {
        ignored.push(format!(
            "{} (from {}) does not apply to hsm.backend = \"{backend}\"",
            key.path,
            raw.origin(key)
        ));
    }
}

fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(PathBuf::from(s))
}

fn existing_file(s: &str) -> Result<PathBuf, String> {
    let path = non_empty_path(s)?;
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => Err("is not a regular file".to_owned()),
        Err(e) => Err(format!("cannot be read ({e})")),
    }
}

fn token_label(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_TOKEN_LABEL_LEN {
        return Err(format!(
            "must be 1 to {MAX_TOKEN_LABEL_LEN} bytes long, got {}",
            s.len()
        ));
    }
    Ok(s.to_owned())
}

fn in_range<T>(s: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display,
{
    match s.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

fn otlp_endpoint(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(s.to_owned()),
        _ => Err(
            "expected an http:// or https:// URL with a host (OTLP over HTTP/protobuf)".to_owned(),
        ),
    }
}

/// The URL with any `user:password@` and query string replaced by `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("<redacted>@{host}"),
        None => authority.to_owned(),
    };
    let path = match path.split_once('?') {
        Some((path, _)) => format!("{path}?<redacted>"),
        None => path.to_owned(),
    };
    let slash = if rest.contains('/') { "/" } else { "" };
    if scheme.is_empty() {
        format!("{authority}{slash}{path}")
    } else {
        format!("{scheme}://{authority}{slash}{path}")
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_FILE_LEN {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            len,
        });
    }
    std::fs::read_to_string(path).map_err(read)
}

/// Calls `leaf` with the dotted path of every non-table value.
fn flatten(
    prefix: &str,
    table: &config::Map<String, Value>,
    leaf: &mut impl FnMut(String, &Value),
) {
    for (name, value) in table {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match &value.kind {
            // A section: descend. A table where a key is expected ends as an unknown key below.
            ValueKind::Table(inner) if prefix.is_empty() => flatten(&path, inner, leaf),
            _ => leaf(path, value),
        }
    }
}

fn scalar(value: &Value) -> Option<String> {
    match &value.kind {
        ValueKind::Table(_) | ValueKind::Array(_) | ValueKind::Nil => None,
        _ => value.clone().into_string().ok(),
    }
}

fn refuse_unknown(path: String, origin: Origin) -> Problem {
    let reason = if keys::REFUSED_SECRETS.contains(&path.as_str()) {
        format!(
            "PINs never go in the configuration; put the PIN in a file named by {} or in the environment \
             variable named by {} (default {})",
            keys::HSM_PIN_FILE.path,
            keys::HSM_PIN_ENV.path,
            keys::HSM_PIN_ENV.default.unwrap_or_default()
        )
    } else if !path.contains('.') {
        "unknown key: every key belongs to a section ([hsm], [admin], [telemetry]); see `backbone config keys`"
            .to_owned()
    } else {
        "unknown key; see `backbone config keys` for the list".to_owned()
    };
    // The value of an unknown key may be a secret that landed in the wrong place: never shown.
    Problem {
        key: path,
        value: None,
        origin,
        reason,
    }
}

fn unknown_env(name: &str) -> Problem {
    let path = keys::path_of_env(name).unwrap_or_default();
    let reason = if keys::REFUSED_SECRETS.contains(&path.as_str()) {
        refuse_unknown(path, Origin::Default).reason
    } else {
        format!(
            "names no configuration key ({path} does not exist); see `backbone config keys` for the list"
        )
    };
    // Its value may be a secret set under the wrong name: never shown.
    Problem {
        key: name.to_owned(),
        value: None,
        origin: Origin::Env(name.to_owned()),
        reason,
    }
}

#[cfg(test)]
mod tests;
