#!/usr/bin/env bash
# Installs what the tests need, then runs the whole test suite: unit, API and end-to-end tests of
# every crate, doc tests, and one quick pass of every benchmark (criterion's test mode).
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/env.sh
backbone_install_packages "${BACKBONE_PACKAGES[@]}"

backbone_fresh_softhsm

start=$(date +%s)
cargo build --workspace --all-targets --locked
cargo test --workspace --all-targets --locked --no-fail-fast
cargo test --workspace --doc --locked
echo "build and tests took $(( $(date +%s) - start )) s"
