use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().copied())
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn problems(result: Result<Settings, ConfigError>) -> Vec<Problem> {
    match result {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn defaults_apply_without_file_or_environment() {
    let settings = load(
        None,
        &env(&[("PATH", "/bin"), ("BACKBONE_HSM_PIN", "1234")]),
    )
    .unwrap();
    assert_eq!(
        settings.hsm.store,
        StoreConfig::Software {
            key_dir: "backbone-keys".into()
        }
    );
    assert_eq!(settings.hsm.pin, PinSource::Env("BACKBONE_HSM_PIN".into()));
    assert_eq!(settings.admin.listen, "127.0.0.1:9100".parse().unwrap());
    assert_eq!(settings.telemetry.log_filter, "info");
    assert_eq!(settings.telemetry.log_format, LogFormat::Text);
    assert_eq!(settings.telemetry.otlp_endpoint, None);
    assert_eq!(settings.origin(&keys::ADMIN_LISTEN), &Origin::Default);
    // The PIN variable is not a configuration key and must never appear in the output.
    assert!(!settings.to_toml().contains("1234"));
}

#[test]
fn environment_overrides_file() {
    let f = file(
        "[hsm]\nkey_dir = \"/file/keys\"\n[admin]\nlisten = \"127.0.0.1:9200\"\n[telemetry]\nlog_format = \"json\"\n",
    );
    let settings = load(
        Some(f.path()),
        &env(&[
            ("BACKBONE_ADMIN__LISTEN", "0.0.0.0:9300"),
            (
                "BACKBONE_TELEMETRY__OTLP_ENDPOINT",
                "http://127.0.0.1:4318/v1/traces",
            ),
        ]),
    )
    .unwrap();
    assert_eq!(
        settings.hsm.store,
        StoreConfig::Software {
            key_dir: "/file/keys".into()
        }
    );
    assert_eq!(settings.admin.listen, "0.0.0.0:9300".parse().unwrap());
    assert_eq!(settings.telemetry.log_format, LogFormat::Json);
    assert_eq!(
        settings.telemetry.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4318/v1/traces")
    );
    assert_eq!(
        settings.origin(&keys::ADMIN_LISTEN),
        &Origin::Env("BACKBONE_ADMIN__LISTEN".into())
    );
    assert_eq!(
        settings.origin(&keys::HSM_KEY_DIR),
        &Origin::File(f.path().to_owned())
    );
}

#[test]
fn pkcs11_store_from_file_with_numbers_from_environment() {
    let module = tempfile::NamedTempFile::new().unwrap();
    let f = file(&format!(
        "[hsm]\nbackend = \"pkcs11\"\nmodule = \"{}\"\ntoken_label = \"gw-signing\"\npin_file = \"/run/secrets/pin\"\nkey_dir = \"/unused\"\n",
        module.path().display()
    ));
    let settings = load(Some(f.path()), &env(&[("BACKBONE_HSM__SESSIONS", "4")])).unwrap();
    let StoreConfig::Pkcs11(p) = &settings.hsm.store else {
        panic!("{:?}", settings.hsm.store)
    };
    assert_eq!(p.module, module.path());
    assert_eq!(p.token_label, "gw-signing");
    assert_eq!(p.sessions, 4);
    assert_eq!(p.reconnect_attempts, 3);
    assert_eq!(settings.hsm.pin, PinSource::File("/run/secrets/pin".into()));
    assert_eq!(settings.ignored.len(), 1, "{:?}", settings.ignored);
    assert!(settings.ignored[0].starts_with("hsm.key_dir"));
}

#[test]
fn a_pin_in_the_file_or_environment_is_refused_and_never_shown() {
    let f = file("[hsm]\npin = \"s3cret-pin\"\n");
    let found = problems(load(
        Some(f.path()),
        &env(&[("BACKBONE_HSM__PIN", "0th3r-pin")]),
    ));
    assert_eq!(found.len(), 2, "{found:?}");
    let text = ConfigError::Invalid(found.clone()).to_string();
    assert!(text.contains("hsm.pin (from file"), "{text}");
    assert!(
        text.contains("BACKBONE_HSM__PIN (from environment variable BACKBONE_HSM__PIN)"),
        "{text}"
    );
    assert!(
        text.contains("PINs never go in the configuration"),
        "{text}"
    );
    assert!(
        !text.contains("s3cret-pin") && !text.contains("0th3r-pin"),
        "{text}"
    );
}

#[test]
fn every_problem_is_reported_with_key_value_and_origin() {
    let f = file(
        "[hsm]\nbackend = \"pkcs11\"\nsessions = 0\n[admin]\nlisten = \"localhost\"\n[nosuch]\nx = 1\n",
    );
    let found = problems(load(
        Some(f.path()),
        &env(&[
            ("BACKBONE_TELEMETRY__LOG_FORMAT", "xml"),
            ("BACKBONE_HSM__TOKN_LABEL", "x"),
        ]),
    ));
    let keys: Vec<_> = found.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "BACKBONE_HSM__TOKN_LABEL",
        "nosuch.x",
        "hsm.module",
        "hsm.token_label",
        "hsm.sessions",
        "admin.listen",
        "telemetry.log_format",
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
    }
    let sessions = found.iter().find(|p| p.key == "hsm.sessions").unwrap();
    assert_eq!(sessions.value.as_deref(), Some("0"));
    assert_eq!(sessions.origin, Origin::File(f.path().to_owned()));
    let format = found
        .iter()
        .find(|p| p.key == "telemetry.log_format")
        .unwrap();
    assert_eq!(
        format.origin,
        Origin::Env("BACKBONE_TELEMETRY__LOG_FORMAT".into())
    );
    assert!(format.to_string().contains("\"xml\""));
}

#[test]
fn bad_values_are_refused() {
    let cases: &[(&str, &str)] = &[
        ("BACKBONE_HSM__BACKEND", "softhsm"),
        ("BACKBONE_HSM__KEY_DIR", ""),
        ("BACKBONE_HSM__PIN_ENV", "lower-case"),
        ("BACKBONE_HSM__PIN_ENV", "BACKBONE_HSM__BACKEND"),
        ("BACKBONE_TELEMETRY__LOG_FILTER", "info,[[["),
        ("BACKBONE_TELEMETRY__OTLP_ENDPOINT", "127.0.0.1:4318"),
        ("BACKBONE_TELEMETRY__SERVICE_NAME", ""),
    ];
    for (name, value) in cases {
        let found = problems(load(None, &env(&[(name, value)])));
        assert_eq!(found.len(), 1, "{name}={value}: {found:?}");
        assert_eq!(keys::env_name(&found[0].key), *name);
    }
}

#[test]
fn pkcs11_module_must_exist_and_both_pin_sources_conflict() {
    let found = problems(load(
        None,
        &env(&[
            ("BACKBONE_HSM__BACKEND", "pkcs11"),
            ("BACKBONE_HSM__MODULE", "/nonexistent/libpkcs11.so"),
            ("BACKBONE_HSM__TOKEN_LABEL", "t"),
            ("BACKBONE_HSM__PIN_FILE", "/p"),
            ("BACKBONE_HSM__PIN_ENV", "MY_PIN"),
        ]),
    ));
    let keys: Vec<_> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["hsm.module", "hsm.pin_file"], "{found:?}");
}

#[test]
fn effective_toml_loads_back_to_the_same_settings() {
    let f = file(
        "[hsm]\nkey_dir = \"/k\"\npin_env = \"GW_PIN\"\n[telemetry]\notlp_endpoint = \"https://user:pw@collector:4318/v1/traces?token=x\"\n",
    );
    let settings = load(Some(f.path()), &Env::default()).unwrap();
    let text = settings.to_toml();
    assert!(!text.contains("pw@") && !text.contains("token=x"), "{text}");
    assert!(
        text.contains("https://<redacted>@collector:4318/v1/traces?<redacted>"),
        "{text}"
    );
    // Without the redacted endpoint, the printed TOML is a valid configuration file itself.
    let printed = file(&text.replace("otlp_endpoint", "# otlp_endpoint"));
    let again = load(Some(printed.path()), &Env::default()).unwrap();
    assert_eq!(again.hsm.store, settings.hsm.store);
    assert_eq!(again.hsm.pin, settings.hsm.pin);
    assert_eq!(again.admin.listen, settings.admin.listen);
}

#[test]
fn unreadable_or_malformed_files_are_errors() {
    assert!(matches!(
        load(
            Some(Path::new("/nonexistent/backbone.toml")),
            &Env::default()
        ),
        Err(ConfigError::Read { .. })
    ));
    let f = file("[hsm\nbackend = ");
    assert!(matches!(
        load(Some(f.path()), &Env::default()),
        Err(ConfigError::Syntax { .. })
    ));
}

#[test]
fn pin_is_read_from_file_or_environment() {
    let f = file("5678\n");
    assert_eq!(
        PinSource::File(f.path().to_owned())
            .read(&Env::default())
            .unwrap()
            .expose(),
        "5678"
    );
    let source = PinSource::Env("GW_PIN".into());
    assert_eq!(
        source.read(&env(&[("GW_PIN", "1234")])).unwrap().expose(),
        "1234"
    );
    let missing = source.read(&Env::default()).unwrap_err().to_string();
    assert!(missing.contains("environment variable GW_PIN"), "{missing}");
    assert!(source.read(&env(&[("GW_PIN", "")])).is_err());
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        redact_url("http://127.0.0.1:4318/v1/traces"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        redact_url("https://a:b@h/p?k=v"),
        "https://<redacted>@h/p?<redacted>"
    );
    assert_eq!(redact_url("http://h:1"), "http://h:1");
}
