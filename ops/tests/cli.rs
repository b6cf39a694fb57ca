//! The `backbone` binary run as an operator would, against software keys in a temporary directory.
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use x509_parser::prelude::FromDer;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `backbone` in `dir` with exactly `env` (plus PATH) as its environment.
fn backbone(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backbone"));
    command
        .current_dir(dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    Run {
        code: status.code().unwrap(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// A temporary directory with `backbone.toml` using software keys in `<dir>/keys`.
fn software_setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("backbone.toml");
    let keys = dir.path().join("keys");
    std::fs::write(
        &config,
        format!(
            "[hsm]\nbackend = \"software\"\nkey_dir = \"{}\"\n",
            keys.display()
        ),
    )
    .unwrap();
    (dir, config)
}

fn ok(run: &Run) {
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

#[test]
fn keygen_list_pubkey() {
    let (dir, config) = software_setup();
    let cfg = config.to_str().unwrap();
    let run = backbone(
        dir.path(),
        &["--config", cfg, "hsm", "keygen", "--label", "gw-sign"],
        &[],
    );
    ok(&run);
    let fingerprint = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint (SHA-256 of the public key): "))
        .unwrap();
    assert_eq!(fingerprint.len(), 64);
    assert!(dir.path().join("keys/gw-sign.p8").exists());

    ok(&backbone(
        dir.path(),
        &[
            "--config",
            cfg,
            "hsm",
            "keygen",
            "--label",
            "tsa",
            "--key-type",
            "ed25519",
        ],
        &[],
    ));

    // Generation never overwrites: the operator is told, with exit code 64.
    let again = backbone(
        dir.path(),
        &["--config", cfg, "hsm", "keygen", "--label", "gw-sign"],
        &[],
    );
    assert_eq!(again.code, 64, "{}", again.stderr);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    let list = backbone(dir.path(), &["--config", cfg, "hsm", "list"], &[]);
    ok(&list);
    assert!(
        list.stdout
            .contains(&format!("gw-sign\tec-p256\t{fingerprint}")),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("tsa\ted25519\t"), "{}", list.stdout);

    let pubkey = backbone(
        dir.path(),
        &["--config", cfg, "hsm", "pubkey", "--label", "gw-sign"],
        &[],
    );
    ok(&pubkey);
    let (_, pem) = x509_parser::pem::parse_x509_pem(pubkey.stdout.as_bytes()).unwrap();
    assert_eq!(pem.label, "PUBLIC KEY");
    let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&pem.contents).unwrap();
    assert!(rest.is_empty());
    assert_eq!(
        spki.algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1",
        "an EC public key"
    );
    let key = backbone_hsm::PublicKey::from_pem(pubkey.stdout.as_bytes()).unwrap();
    assert_eq!(key.fingerprint(), fingerprint);

    let missing = backbone(
        dir.path(),
        &["--config", cfg, "hsm", "pubkey", "--label", "nope"],
        &[],
    );
    assert_eq!(missing.code, 64);
    let lines: Vec<_> = missing.stderr.lines().collect();
    assert_eq!(
        lines[0], "error: cannot read key 'nope'",
        "{}",
        missing.stderr
    );
    assert!(
        lines[1].starts_with("  caused by: ") && lines[1].contains("nope"),
        "{}",
        missing.stderr
    );
}

#[test]
fn csr_is_signed_by_the_key_and_names_the_subject() {
    let (dir, config) = software_setup();
    let cfg = config.to_str().unwrap();
    ok(&backbone(
        dir.path(),
        &["--config", cfg, "hsm", "keygen", "--label", "hospital-sign"],
        &[],
    ));
    let out = dir.path().join("hospital.csr");
    let args = [
        "--config",
        cfg,
        "hsm",
        "csr",
        "--label",
        "hospital-sign",
        "--common-name",
        "70000001",
        "--organization",
        "Demo Central Hospital",
        "--country",
        "EE",
        "--serial-number",
        "DEMO/GOV",
        "--out",
        out.to_str().unwrap(),
    ];
    ok(&backbone(dir.path(), &args, &[]));
    let pem_text = std::fs::read(&out).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem_text).unwrap();
    assert_eq!(pem.label, "CERTIFICATE REQUEST");
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .unwrap();
    let subject = csr.certification_request_info.subject.to_string();
    assert!(subject.contains("CN=70000001"), "{subject}");
    assert!(subject.contains("O=Demo Central Hospital"), "{subject}");
    assert!(subject.contains("C=EE"), "{subject}");
    // The request certifies the key in the store, and its self-signature verifies.
    let verified = backbone_hsm::cert::verify_csr(&pem.contents).unwrap();
    let pubkey = backbone(
        dir.path(),
        &["--config", cfg, "hsm", "pubkey", "--label", "hospital-sign"],
        &[],
    );
    assert_eq!(verified.public_key.to_pem(), pubkey.stdout);
    if let Ok(openssl) = Command::new("openssl")
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&out)
        .output()
    {
        assert!(
            openssl.status.success(),
            "{}",
            String::from_utf8_lossy(&openssl.stderr)
        );
    }

    // An existing file is never replaced.
    let again = backbone(dir.path(), &args, &[]);
    assert_eq!(again.code, 1);
    assert!(
        again
            .stderr
            .contains(&format!("cannot create {}", out.display())),
        "{}",
        again.stderr
    );

    // Without --out the request goes to standard output.
    let stdout = backbone(dir.path(), &args[..args.len() - 2], &[]);
    ok(&stdout);
    assert!(
        stdout
            .stdout
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n")
    );

    let bad = backbone(
        dir.path(),
        &[
            "--config",
            cfg,
            "hsm",
            "csr",
            "--label",
            "hospital-sign",
            "--common-name",
            "x",
            "--country",
            "Estonia",
        ],
        &[],
    );
    assert_eq!(bad.code, 64);
    assert!(bad.stderr.contains("--country"), "{}", bad.stderr);
}

#[test]
fn selftest_on_software_keys() {
    let (dir, config) = software_setup();
    let cfg = config.to_str().unwrap();
    let args = [
        "--config",
        cfg,
        "hsm",
        "selftest",
        "--key-type",
        "ec-p256,ed25519",
        "--signatures",
        "10",
        "--burst",
        "40",
    ];
    let run = backbone(dir.path(), &args, &[]);
    ok(&run);
    let out = &run.stdout;
    assert!(
        out.contains("key 'selftest-ec-p256' (ec-p256) generated in"),
        "{out}"
    );
    assert!(
        out.contains("ecdsa-p256-sha256 with 'selftest-ec-p256': signed in"),
        "{out}"
    );
    assert!(out.contains("altered message refused"), "{out}");
    assert!(
        out.contains("ed25519 with 'selftest-ed25519': 10 signatures in"),
        "{out}"
    );
    assert!(
        out.contains("batch signing with 'selftest-ec-p256': 40 concurrent messages"),
        "{out}"
    );
    assert!(
        out.contains("40 proofs encoded, decoded and verified"),
        "{out}"
    );
    assert!(
        out.trim_end()
            .ends_with("selftest passed: 2 key(s), 2 algorithm(s), 0 skipped"),
        "{out}"
    );

    // A second run reuses the selftest keys instead of piling up new ones.
    let again = backbone(dir.path(), &args, &[]);
    ok(&again);
    assert!(
        again
            .stdout
            .contains("key 'selftest-ec-p256' (ec-p256) reused"),
        "{}",
        again.stdout
    );
    let keys = std::fs::read_dir(dir.path().join("keys")).unwrap().count();
    assert_eq!(keys, 2);

    // One named key, every algorithm its type supports.
    ok(&backbone(
        dir.path(),
        &[
            "--config",
            cfg,
            "hsm",
            "keygen",
            "--label",
            "rsa",
            "--key-type",
            "rsa2048",
        ],
        &[],
    ));
    let rsa = backbone(
        dir.path(),
        &[
            "--config",
            cfg,
            "hsm",
            "selftest",
            "--label",
            "rsa",
            "--signatures",
            "3",
            "--burst",
            "8",
        ],
        &[],
    );
    ok(&rsa);
    assert!(
        rsa.stdout.contains("rsa-pkcs1-sha256 with 'rsa'")
            && rsa.stdout.contains("rsa-pss-sha256 with 'rsa'"),
        "{}",
        rsa.stdout
    );
    assert!(
        rsa.stdout
            .contains("selftest passed: 1 key(s), 2 algorithm(s)"),
        "{}",
        rsa.stdout
    );
}

#[test]
fn config_check_prints_the_effective_configuration() {
    let (dir, config) = software_setup();
    let run = backbone(
        dir.path(),
        &["--config", config.to_str().unwrap(), "config", "check"],
        &[
            ("BACKBONE_ADMIN__LISTEN", "127.0.0.1:9555"),
            ("BACKBONE_HSM_PIN", "9876"),
        ],
    );
    ok(&run);
    let printed: toml::Table = run.stdout.parse().unwrap();
    assert_eq!(printed["hsm"]["backend"].as_str(), Some("software"));
    assert_eq!(
        printed["hsm"]["key_dir"].as_str(),
        Some(dir.path().join("keys").to_str().unwrap())
    );
    assert_eq!(printed["hsm"]["pin_env"].as_str(), Some("BACKBONE_HSM_PIN"));
    assert_eq!(printed["admin"]["listen"].as_str(), Some("127.0.0.1:9555"));
    assert_eq!(printed["telemetry"]["log_filter"].as_str(), Some("info"));
    assert!(
        run.stdout
            .contains("listen = \"127.0.0.1:9555\"  # environment variable BACKBONE_ADMIN__LISTEN"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("9876") && !run.stderr.contains("9876"));

    // Without any file, the defaults are valid too.
    ok(&backbone(dir.path(), &["config", "check"], &[]));
    let keys = backbone(dir.path(), &["config", "keys"], &[]);
    ok(&keys);
    assert!(
        keys.stdout
            .contains("hsm.token_label\n    env: BACKBONE_HSM__TOKEN_LABEL"),
        "{}",
        keys.stdout
    );
}

#[test]
fn bad_configuration_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[hsm]\nbackend = \"pkcs11\"\ntoken_label = \"gw\"\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\nsessions = \"many\"\n").unwrap();
    let run = backbone(
        dir.path(),
        &["--config", config.to_str().unwrap(), "config", "check"],
        &[],
    );
    assert_eq!(run.code, 64, "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("error: invalid configuration: hsm.sessions = \"many\""),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("(from file {})", config.display())),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());

    // The same key from the environment is reported with its variable.
    let run = backbone(
        dir.path(),
        &["config", "check"],
        &[("BACKBONE_TELEMETRY__LOG_FORMAT", "xml")],
    );
    assert_eq!(run.code, 64);
    assert!(run.stderr.contains("telemetry.log_format = \"xml\" (from environment variable BACKBONE_TELEMETRY__LOG_FORMAT)"), "{}", run.stderr);

    let missing = backbone(dir.path(), &["--config", "nosuch.toml", "hsm", "list"], &[]);
    assert_eq!(missing.code, 64);
    assert!(
        missing
            .stderr
            .contains("error: cannot read configuration file nosuch.toml\n  caused by: "),
        "{}",
        missing.stderr
    );

    // Usage errors are 64 too, not clap's 2.
    assert_eq!(backbone(dir.path(), &["hsm", "keygen"], &[]).code, 64);
    assert_eq!(backbone(dir.path(), &["hsm", "frobnicate"], &[]).code, 64);
    assert_eq!(
        backbone(
            dir.path(),
            &["hsm", "keygen", "--label", "x", "--key-type", "rsa1024"],
            &[]
        )
        .code,
        64
    );
    assert_eq!(backbone(dir.path(), &["--help"], &[]).code, 0);
}

#[test]
fn a_pin_in_the_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pin.toml");
    std::fs::write(&config, "[hsm]\nbackend = \"software\"\npin = \"424242\"\n").unwrap();
    for args in [&["config", "check"][..], &["hsm", "list"][..]] {
        let mut full = vec!["--config", config.to_str().unwrap()];
        full.extend_from_slice(args);
        let run = backbone(dir.path(), &full, &[]);
        assert_eq!(run.code, 64);
        assert!(run.stderr.contains("hsm.pin (from file"), "{}", run.stderr);
        assert!(
            run.stderr.contains("PINs never go in the configuration"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("424242") && !run.stdout.contains("424242"));
    }
}

#[test]
fn pkcs11_config_check_needs_the_pin() {
    let module = Path::new("/usr/lib/softhsm/libsofthsm2.so");
    if !module.exists() {
        eprintln!("skipped: {} is not installed", module.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p11.toml");
    std::fs::write(&config, format!("[hsm]\nbackend = \"pkcs11\"\nmodule = \"{}\"\ntoken_label = \"gw\"\npin_env = \"GW_PIN\"\n", module.display())).unwrap();
    let cfg = config.to_str().unwrap();
    let run = backbone(dir.path(), &["--config", cfg, "config", "check"], &[]);
    assert_eq!(run.code, 64);
    assert!(
        run.stderr.contains("hsm.pin_env (from file"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("environment variable GW_PIN"),
        "{}",
        run.stderr
    );
    let run = backbone(
        dir.path(),
        &["--config", cfg, "config", "check"],
        &[("GW_PIN", "5678")],
    );
    ok(&run);
    assert!(
        run.stdout
            .contains("# the user PIN is available from environment variable GW_PIN"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("5678"));
}

#[test]
fn demo_refuses_bad_flags_and_says_where_keys_live() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let data_dir = data.to_str().unwrap();
    // Flags are checked before anything starts: exit 64, nothing written.
    for bad in [
        &["--citizens", "5"][..],
        &["--publication-interval", "0"],
        &["--keys", "tpm"],
    ] {
        let run = backbone(
            dir.path(),
            &[&["demo", "--data-dir", data_dir][..], bad].concat(),
            &[],
        );
        assert_eq!(run.code, 64, "{bad:?}: {}", run.stderr);
        assert!(!data.exists(), "{bad:?}");
    }
    // Without SOFTHSM2_CONF, SoftHSM2 cannot be used and the demo says so before starting.
    let run = backbone(
        dir.path(),
        &["demo", "--data-dir", data_dir, "--keys", "softhsm"],
        &[],
    );
    assert_eq!(run.code, 64, "{}", run.stderr);
    assert!(run.stderr.contains("SOFTHSM2_CONF"), "{}", run.stderr);
    // The default names free ports and every component in its help.
    let run = backbone(dir.path(), &["demo", "--help"], &[]);
    ok(&run);
    for flag in [
        "--data-dir",
        "--base-port",
        "--keys",
        "--traffic",
        "--publication-interval",
        "--exit-after-traffic",
        "--seed",
    ] {
        assert!(run.stdout.contains(flag), "{flag}: {}", run.stdout);
    }
}
