#!/usr/bin/env bash
# Installs what the tests need, then runs the whole test suite: unit, API and end-to-end tests of
# every crate, doc tests, and one quick pass of every benchmark (criterion's test mode).
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/env.sh
backbone_install_packages "${BACKBONE_PACKAGES[@]}"
# The portal's browser test: Debian's chromium driven through chromedriver, and axe-core from npm
# (injected into the pages under test, never served). npm comes with Node.js where Node.js is
# installed, so Debian's npm is only added when there is none.
backbone_install_packages chromium chromium-driver
command -v npm >/dev/null || backbone_install_packages nodejs npm
npm install --prefix portal/tests/browser --no-audit --no-fund --loglevel=error

backbone_fresh_softhsm

start=$(date +%s)
# Style gate: the formatting rustfmt.toml describes (rustfmt comes with the toolchain; a second).
cargo fmt --all -- --check
cargo build --workspace --all-targets --locked
cargo test --workspace --all-targets --locked --no-fail-fast
cargo test --workspace --doc --locked
echo "build and tests took $(( $(date +%s) - start )) s"
