#!/usr/bin/env bash
# Runs the benchmarks (criterion) with their baselines. Slow: not part of the test suite.
# Arguments go to `cargo bench` (e.g. `ops/bench.sh -p backbone-hsm --bench pkcs11`).
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/env.sh
backbone_install_packages "${BACKBONE_PACKAGES[@]}"
softhsm_dir="$(mktemp -d -t backbone-softhsm.XXXXXX)"
trap 'rm -rf "$softhsm_dir"' EXIT
mkdir -p "$softhsm_dir/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$softhsm_dir" \
  >"$softhsm_dir/softhsm2.conf"
export SOFTHSM2_CONF="$softhsm_dir/softhsm2.conf"
if (($#)); then
  cargo bench --locked "$@"
else
  cargo bench --locked --workspace
fi
