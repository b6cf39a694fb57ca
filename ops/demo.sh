#!/usr/bin/env bash
# Installs what Backbone needs, builds the `backbone` binary and runs `backbone demo`: a registry, a
# timestamping service, five agency gateways with their FHIR services and realistic traffic on
# 127.0.0.1, until Ctrl-C. Extra arguments go to `backbone demo` (try `ops/demo.sh --help`).
#
# The keys live on SoftHSM2 tokens kept under the demo's data directory: SoftHSM2 reads the
# configuration file named by SOFTHSM2_CONF, which this script writes and exports (unless it is
# already set). Without it the demo uses software keys, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/env.sh
backbone_install_packages "${BACKBONE_PACKAGES[@]}"
# The same build as ops/test.sh's (every crate and target, so the same features resolve): the test
# command then reuses it instead of compiling RocksDB's C++ a second time.
cargo build --workspace --all-targets --locked

data_dir=backbone-demo
previous=""
for arg in "$@"; do
  case "$previous" in --data-dir) data_dir="$arg" ;; esac
  case "$arg" in --data-dir=*) data_dir="${arg#--data-dir=}" ;; esac
  previous="$arg"
done
if [ -z "${SOFTHSM2_CONF:-}" ] && [ -e /usr/lib/softhsm/libsofthsm2.so ]; then
  mkdir -p "$data_dir/softhsm/tokens"
  softhsm_dir="$(cd "$data_dir/softhsm" && pwd)"
  [ -f "$softhsm_dir/softhsm2.conf" ] ||
    printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$softhsm_dir" >"$softhsm_dir/softhsm2.conf"
  export SOFTHSM2_CONF="$softhsm_dir/softhsm2.conf"
fi
exec "$CARGO_TARGET_DIR/debug/backbone" demo "$@"
