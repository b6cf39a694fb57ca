# Shared by ops/test.sh, ops/demo.sh and ops/bench.sh: installs the Debian packages Backbone needs when
# they are missing, and points cargo at a build cache outside the checkout, so that every clone on
# this machine (CI's included) reuses one build instead of compiling the C and C++ dependencies again.

backbone_install_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# What building and running Backbone needs: OpenSSL headers for the openssl crate, pkg-config to
# find them, SoftHSM2 as the PKCS#11 token, and the openssl command that tests use as an independent
# verifier; libclang-dev (bindgen) and g++ to build RocksDB.
BACKBONE_PACKAGES=(pkg-config libssl-dev openssl softhsm2 libclang-dev g++)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/backbone/target}"

# Points SoftHSM2 at a fresh token directory for this run (removed on exit); tests and benchmarks
# each create their own tokens in it.
backbone_fresh_softhsm() {
  softhsm_dir="$(mktemp -d -t backbone-softhsm.XXXXXX)"
  trap 'rm -rf "$softhsm_dir"' EXIT
  mkdir -p "$softhsm_dir/tokens"
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$softhsm_dir" \
    >"$softhsm_dir/softhsm2.conf"
  export SOFTHSM2_CONF="$softhsm_dir/softhsm2.conf"
}
