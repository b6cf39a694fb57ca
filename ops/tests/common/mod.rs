//! Fixtures shared by the tests that run the `backbone` binary as a real process.
// Test fixtures: failing loudly is the point.
#![allow(dead_code, clippy::unwrap_used)]

pub mod backbone;

use std::path::Path;
use std::process::{Child, Command};

/// `backbone` in `dir`, with a clean environment, software keys under `dir/keys`, quiet logs.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backbone"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BACKBONE_HSM__KEY_DIR", dir.join("keys"))
        .env("BACKBONE_TELEMETRY__LOG_FILTER", "warn");
    command
}

/// A child process killed when the test ends, passed or failed, so none outlives it.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
