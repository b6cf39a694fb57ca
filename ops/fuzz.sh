#!/usr/bin/env bash
# Runs Backbone's cargo-fuzz targets and grows their corpora (docs/fuzzing.md).
#
#   ops/fuzz.sh                         every target of every crate, 900 s each
#   ops/fuzz.sh 60 timestamping/verify  that crate's targets, 60 s each
#   ops/fuzz.sh 60 hsm:key_file         one target
#
# Each run starts from the committed corpus (CRATE/fuzz/corpus/TARGET), then minimises it
# (`cargo fuzz cmin`), so that what is committed stays small; a crash leaves its input in
# CRATE/fuzz/artifacts/TARGET and stops the script. The toolchain is stable: RUSTC_BOOTSTRAP=1
# lets cargo-fuzz use the unstable flags it needs. The replay tests (`tests/fuzz_corpus.rs` of
# each crate with a corpus) run every committed input in the ordinary test suite.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${1:-900}"
shift || true
crates=(timestamping/verify hsm registry timestamping gateway)
selected=("$@")
((${#selected[@]})) || selected=("${crates[@]}")

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Fuzz builds are instrumented: keep them apart from the workspace's build cache.
export CARGO_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/backbone/fuzz-target"
export RUSTC_BOOTSTRAP=1

targets_of() {
  sed -n 's/^name = "\(.*\)"$/\1/p' "$1/fuzz/Cargo.toml" | tail -n +2
}

for selection in "${selected[@]}"; do
  crate="${selection%%:*}"
  if [[ "$selection" == *:* ]]; then
    targets=("${selection#*:}")
  else
    mapfile -t targets < <(targets_of "$crate")
  fi
  for target in "${targets[@]}"; do
    corpus="corpus/$target"
    mkdir -p "$crate/fuzz/$corpus"
    echo "== $crate:$target for ${seconds}s" >&2
    (cd "$crate/fuzz" && cargo fuzz run "$target" "$corpus" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1)
    (cd "$crate/fuzz" && cargo fuzz cmin "$target" "$corpus" -- -rss_limit_mb=2048 -max_len=65536)
  done
done
