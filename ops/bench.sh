#!/usr/bin/env bash
# Runs the benchmarks (criterion) with their baselines. Slow: not part of the test suite.
# Arguments go to `cargo bench` (e.g. `ops/bench.sh -p backbone-hsm --bench pkcs11`).
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/env.sh
backbone_install_packages "${BACKBONE_PACKAGES[@]}"
backbone_fresh_softhsm
if (($#)); then
  cargo bench --locked "$@"
else
  cargo bench --locked --workspace
fi
