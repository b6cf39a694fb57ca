#!/usr/bin/env bash
# Installs what Backbone needs, builds the `backbone` binary and runs `backbone demo` on its embedded
# defaults. Extra arguments go to `backbone demo` (try `ops/demo.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
. ops/env.sh
backbone_install_packages "${BACKBONE_PACKAGES[@]}"
cargo build --locked --bin backbone
exec "$CARGO_TARGET_DIR/debug/backbone" demo "$@"
