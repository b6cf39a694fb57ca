//! Every configuration key, in one place: its path in the TOML file, its environment variable, its
//! default and what it changes.
//!
//! The environment name of a key is `BACKBONE_` followed by its path in upper case, with `__` between
//! the section and the key: `hsm.token_label` is `BACKBONE_HSM__TOKEN_LABEL`. An environment
//! variable overrides the file. `backbone config keys` prints this table.

/// One configuration key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// Dotted path in the TOML file: `section.key`.
    pub path: &'static str,
    /// The environment variable that overrides it.
    pub env: &'static str,
    /// The value used when neither the file nor the environment sets it; `None` when the key is
    /// optional or required without a default.
    pub default: Option<&'static str>,
    /// What the key changes, for operators.
    pub doc: &'static str,
}

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "BACKBONE_";

/// Separator between the section and the key in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// Where keys live: `software` (PKCS#8 files in `hsm.key_dir`) or `pkcs11` (a token).
pub const HSM_BACKEND: Key = Key {
    path: "hsm.backend",
    env: "BACKBONE_HSM__BACKEND",
    default: Some("software"),
    doc: "key store: \"software\" (PKCS#8 files in hsm.key_dir, for development) or \"pkcs11\" (an HSM token)",
};

/// The software key directory.
pub const HSM_KEY_DIR: Key = Key {
    path: "hsm.key_dir",
    env: "BACKBONE_HSM__KEY_DIR",
    default: Some("backbone-keys"),
    doc: "software backend only: directory of PKCS#8 key files, created with mode 0700 if missing",
};

/// The PKCS#11 module.
pub const HSM_MODULE: Key = Key {
    path: "hsm.module",
    env: "BACKBONE_HSM__MODULE",
    default: None,
    doc: "pkcs11 backend only, required: path of the PKCS#11 module (SoftHSM2 on Debian: /usr/lib/softhsm/libsofthsm2.so)",
};

/// The token label.
pub const HSM_TOKEN_LABEL: Key = Key {
    path: "hsm.token_label",
    env: "BACKBONE_HSM__TOKEN_LABEL",
    default: None,
    doc: "pkcs11 backend only, required: label of the token that holds the keys (slot numbers are not stable, labels are)",
};

/// Sessions kept open on the token.
pub const HSM_SESSIONS: Key = Key {
    path: "hsm.sessions",
    env: "BACKBONE_HSM__SESSIONS",
    default: Some("2"),
    doc: "pkcs11 backend only: logged-in sessions kept open for signing, 1 to 64 (one per core signs in parallel)",
};

/// Reconnection attempts.
pub const HSM_RECONNECT_ATTEMPTS: Key = Key {
    path: "hsm.reconnect_attempts",
    env: "BACKBONE_HSM__RECONNECT_ATTEMPTS",
    default: Some("3"),
    doc: "pkcs11 backend only: times a signer re-opens its sessions after losing the token before it fails, 0 to 100",
};

/// File holding the user PIN.
pub const HSM_PIN_FILE: Key = Key {
    path: "hsm.pin_file",
    env: "BACKBONE_HSM__PIN_FILE",
    default: None,
    doc: "file whose content is the token's user PIN (a trailing newline is ignored); set this or hsm.pin_env, not both",
};

/// Environment variable holding the user PIN.
pub const HSM_PIN_ENV: Key = Key {
    path: "hsm.pin_env",
    env: "BACKBONE_HSM__PIN_ENV",
    default: Some("BACKBONE_HSM_PIN"),
    doc: "name of the environment variable that holds the token's user PIN, read when hsm.pin_file is not set (the variable itself is never a configuration key)",
};

/// The admin listener address.
pub const ADMIN_LISTEN: Key = Key {
    path: "admin.listen",
    env: "BACKBONE_ADMIN__LISTEN",
    default: Some("127.0.0.1:9100"),
    doc: "address of the admin listener that serves /metrics, /live and /ready (loopback by default: expose it on purpose)",
};

/// The log filter.
pub const TELEMETRY_LOG_FILTER: Key = Key {
    path: "telemetry.log_filter",
    env: "BACKBONE_TELEMETRY__LOG_FILTER",
    default: Some("info"),
    doc: "which log events are written to standard error, in tracing's EnvFilter syntax (e.g. \"info,backbone_hsm=debug\")",
};

/// The log format.
pub const TELEMETRY_LOG_FORMAT: Key = Key {
    path: "telemetry.log_format",
    env: "BACKBONE_TELEMETRY__LOG_FORMAT",
    default: Some("text"),
    doc: "log format on standard error: \"text\" for people or \"json\" (one object per line) for log shippers",
};

/// The OTLP endpoint.
pub const TELEMETRY_OTLP_ENDPOINT: Key = Key {
    path: "telemetry.otlp_endpoint",
    env: "BACKBONE_TELEMETRY__OTLP_ENDPOINT",
    default: None,
    doc: "OTLP HTTP/protobuf traces endpoint (e.g. http://127.0.0.1:4318/v1/traces); spans are exported only when set",
};

/// The service name in exported spans.
pub const TELEMETRY_SERVICE_NAME: Key = Key {
    path: "telemetry.service_name",
    env: "BACKBONE_TELEMETRY__SERVICE_NAME",
    default: Some("backbone"),
    doc: "service.name resource attribute of exported spans",
};

/// Every key, in the order `backbone config check` prints them.
pub const ALL: [Key; 13] = [
    HSM_BACKEND,
    HSM_KEY_DIR,
    HSM_MODULE,
    HSM_TOKEN_LABEL,
    HSM_SESSIONS,
    HSM_RECONNECT_ATTEMPTS,
    HSM_PIN_FILE,
    HSM_PIN_ENV,
    ADMIN_LISTEN,
    TELEMETRY_LOG_FILTER,
    TELEMETRY_LOG_FORMAT,
    TELEMETRY_OTLP_ENDPOINT,
    TELEMETRY_SERVICE_NAME,
];

/// Keys that would hold a secret and are refused wherever they appear: PINs never go in
/// configuration.
pub const REFUSED_SECRETS: [&str; 4] = ["hsm.pin", "hsm.user_pin", "hsm.so_pin", "hsm.password"];

/// The key at this dotted path.
pub fn by_path(path: &str) -> Option<&'static Key> {
    ALL.iter().find(|k| k.path == path)
}

/// The key overridden by this environment variable.
pub fn by_env(name: &str) -> Option<&'static Key> {
    ALL.iter().find(|k| k.env == name)
}

/// The environment variable name for a dotted path, by the rule in the module docs.
pub fn env_name(path: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        path.to_ascii_uppercase().replace('.', ENV_SEPARATOR)
    )
}

/// The dotted path for a `BACKBONE_SECTION__KEY` environment variable name, if it has that shape.
pub fn path_of_env(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let (section, key) = rest.split_once(ENV_SEPARATOR)?;
    Some(format!(
        "{}.{}",
        section.to_ascii_lowercase(),
        key.to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_rule() {
        for key in ALL {
            assert_eq!(key.env, env_name(key.path), "{}", key.path);
            assert_eq!(path_of_env(key.env).as_deref(), Some(key.path));
            assert!(!key.doc.is_empty());
        }
        assert_eq!(path_of_env("BACKBONE_HSM_PIN"), None);
    }

    #[test]
    fn readme_lists_every_key() {
        let readme = include_str!("../../README.md");
        for key in ALL {
            let row = format!("| `{}` | `{}` |", key.path, key.env);
            assert!(
                readme.contains(&row),
                "README.md has no row for {}",
                key.path
            );
        }
    }

    #[test]
    fn paths_are_unique() {
        for (i, key) in ALL.iter().enumerate() {
            assert!(
                ALL.iter().skip(i + 1).all(|other| other.path != key.path),
                "{}",
                key.path
            );
        }
    }
}
