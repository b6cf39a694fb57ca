#!/usr/bin/env bash
# Installs what the tests need, then runs the whole test suite: unit, API and end-to-end tests of
# every crate, doc tests, and one quick pass of every benchmark (criterion's test mode).
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/env.sh
backbone_install_packages "${BACKBONE_PACKAGES[@]}"

# A fresh SoftHSM2 token directory for this run; every test creates its own token in it.
softhsm_dir="$(mktemp -d -t backbone-softhsm.XXXXXX)"
trap 'rm -rf "$softhsm_dir"' EXIT
mkdir -p "$softhsm_dir/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$softhsm_dir" \
  >"$softhsm_dir/softhsm2.conf"
export SOFTHSM2_CONF="$softhsm_dir/softhsm2.conf"

start=$(date +%s)
cargo build --workspace --all-targets --locked
cargo test --workspace --all-targets --locked --no-fail-fast
cargo test --workspace --doc --locked
echo "build and tests took $(( $(date +%s) - start )) s"
