//! `backbone hsm` against a real PKCS#11 module: a fresh SoftHSM2 token, provisioned with
//! `softhsm2-util`, with the PIN given through a PIN file, an environment variable and `--pin-file`.
//!
//! SoftHSM2 reads the file named by `SOFTHSM2_CONF`: `.cargo/config.toml` points it at
//! `target/softhsm/softhsm2.conf` and `ops/test.sh` at a temporary directory. The test creates the
//! file and its token directory when they are missing. It fails when SoftHSM2 is not installed (`ops/test.sh` installs it).
// Helpers outside #[test] functions: a test fixture that fails loudly is the point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const USER_PIN: &str = "5678";

struct Token {
    conf: PathBuf,
    label: String,
}

impl Token {
    /// Initialises a new token with a label unique to this process.
    fn new(name: &str) -> Token {
        assert!(
            Path::new(MODULE).exists()
                && Command::new("softhsm2-util")
                    .arg("--version")
                    .output()
                    .is_ok(),
            "SoftHSM2 is not installed: ops/test.sh installs it (Debian package softhsm2)"
        );
        let conf = PathBuf::from(
            std::env::var_os("SOFTHSM2_CONF")
                .unwrap_or_else(|| "target/softhsm/softhsm2.conf".into()),
        );
        if !conf.exists() {
            let tokens = conf.parent().unwrap().join("tokens");
            std::fs::create_dir_all(&tokens).unwrap();
            let text = format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            );
            // Another test process may create it at the same moment: write a copy, then rename.
            let tmp = conf.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &conf).unwrap();
        }
        let mut label = format!("bbt-ops-{}-{name}", std::process::id());
        label.truncate(32);
        let output = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                &label,
                "--so-pin",
                "1234",
                "--pin",
                USER_PIN,
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "softhsm2-util: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Token { conf, label }
    }

    fn config(&self, dir: &Path, pin_line: &str) -> PathBuf {
        let path = dir.join("p11.toml");
        let text = format!(
            "[hsm]\nbackend = \"pkcs11\"\nmodule = \"{MODULE}\"\ntoken_label = \"{}\"\n{pin_line}\n",
            self.label
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn backbone(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_backbone"));
        command
            .current_dir(dir)
            .args(args)
            .env_clear()
            .env("SOFTHSM2_CONF", &self.conf);
        for (k, v) in env {
            command.env(k, v);
        }
        let output = command.output().unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (
            output.status.code().unwrap(),
            text(output.stdout),
            text(output.stderr),
        )
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        let _ = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--delete-token", "--token", &self.label])
            .output();
    }
}

#[test]
fn selftest_keygen_and_csr_on_a_softhsm_token() {
    let token = Token::new("selftest");
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("user.pin");
    std::fs::write(&pin_file, format!("{USER_PIN}\n")).unwrap();
    let config = token.config(
        dir.path(),
        &format!("pin_file = \"{}\"", pin_file.display()),
    );
    let cfg = config.to_str().unwrap();

    let (code, out, err) = token.backbone(
        dir.path(),
        &[
            "--config",
            cfg,
            "hsm",
            "selftest",
            "--key-type",
            "ec-p256,rsa2048",
            "--signatures",
            "10",
            "--burst",
            "32",
        ],
        &[],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.starts_with(&format!("selftest of PKCS#11 token '{}'", token.label)),
        "{out}"
    );
    assert!(
        out.contains("key 'selftest-ec-p256' (ec-p256) generated in"),
        "{out}"
    );
    assert!(
        out.contains("ecdsa-p256-sha256 with 'selftest-ec-p256': 10 signatures in"),
        "{out}"
    );
    assert!(
        out.contains("rsa-pss-sha256 with 'selftest-rsa2048': signed in"),
        "{out}"
    );
    assert!(
        out.contains("batch signing with 'selftest-rsa2048': 32 concurrent messages"),
        "{out}"
    );
    assert!(
        out.contains("selftest passed: 2 key(s), 3 algorithm(s), 0 skipped"),
        "{out}"
    );

    // The keys live on the token: another process lists them, with the PIN from the environment.
    let env_config = token.config(dir.path(), "pin_env = \"GW_PIN\"");
    let env_cfg = env_config.to_str().unwrap();
    let (code, out, err) = token.backbone(
        dir.path(),
        &["--config", env_cfg, "hsm", "list"],
        &[("GW_PIN", USER_PIN)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("selftest-ec-p256\tec-p256\t") && out.contains("selftest-rsa2048\trsa2048\t"),
        "{out}"
    );

    // keygen and a CSR signed on the token, with --pin-file overriding the configuration.
    let flag = ["--pin-file", pin_file.to_str().unwrap()];
    let (code, _, err) = token.backbone(
        dir.path(),
        &[
            &["--config", env_cfg, "hsm", "keygen", "--label", "gw-sign"][..],
            &flag,
        ]
        .concat(),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let csr = dir.path().join("gw.csr");
    let (code, _, err) = token.backbone(
        dir.path(),
        &[
            &[
                "--config",
                env_cfg,
                "hsm",
                "csr",
                "--label",
                "gw-sign",
                "--common-name",
                "gw1",
                "--out",
                csr.to_str().unwrap(),
            ][..],
            &flag,
        ]
        .concat(),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&std::fs::read(&csr).unwrap()).unwrap();
    let verified = backbone_hsm::cert::verify_csr(&pem.contents).unwrap();
    assert_eq!(verified.subject.common_name, "gw1");

    // The demo keeps every component's keys on SoftHSM2 tokens of its own when SOFTHSM2_CONF
    // names a configuration, as ops/demo.sh arranges (here: a token directory of its own).
    let data = dir.path().join("demo");
    let demo_tokens = dir.path().join("demo-tokens");
    std::fs::create_dir_all(&demo_tokens).unwrap();
    let demo_conf = dir.path().join("demo-softhsm2.conf");
    std::fs::write(
        &demo_conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            demo_tokens.display()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_backbone"))
        .current_dir(dir.path())
        .args([
            "demo",
            "--data-dir",
            data.to_str().unwrap(),
            "--base-port",
            "0",
            "--citizens",
            "50",
            "--scenarios",
            "1",
            "--exit-after-traffic",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SOFTHSM2_CONF", &demo_conf)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(out.contains("keys: SoftHSM2 tokens demo-"), "{out}");
    assert!(out.contains("5 exchanges made, 0 failed"), "{out}");
    assert!(
        !data.join("keys").exists(),
        "software keys were written although SoftHSM2 was available"
    );
    assert!(
        std::fs::read_dir(&demo_tokens).unwrap().count() >= 7,
        "one token per component"
    );

    // A wrong PIN is the operator's to fix: exit 64, and the PIN is not printed.
    let (code, _, err) = token.backbone(
        dir.path(),
        &["--config", env_cfg, "hsm", "list"],
        &[("GW_PIN", "wrong-9q7z")],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("refused the user PIN"), "{err}");
    assert!(!err.contains("wrong-9q7z"), "{err}");
    // No PIN at all names where it was expected.
    let (code, _, err) = token.backbone(dir.path(), &["--config", env_cfg, "hsm", "list"], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("environment variable GW_PIN"), "{err}");
}
