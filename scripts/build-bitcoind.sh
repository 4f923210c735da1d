#!/usr/bin/env bash
# Build a regtest-capable bitcoind + bitcoin-cli from the Bitcoin Core source tree that ships inside
# PyPI's py-bitcoinkernel sdist, once, and cache the two binaries outside the work tree.
#
# Prints the directory holding the binaries on its last line of stdout. Idempotent: a cache hit returns at once.
# Honours POOL_BITCOIND_DIR (use these binaries, skip everything) and POOL_CACHE_DIR (default ~/.cache/pool).
set -euo pipefail

SDIST_NAME="py_bitcoinkernel-0.1.0a5.tar.gz"
SDIST_SPEC="py-bitcoinkernel==0.1.0a5"
SDIST_SHA256="71b91eecac7a8b07248be04471c3bf98016b38bf823aefd28f7b31179940520d"

log() { printf '[build-bitcoind] %s\n' "$*" >&2; }

if [ -n "${POOL_BITCOIND_DIR:-}" ] && [ -x "$POOL_BITCOIND_DIR/bitcoind" ]; then
    echo "$POOL_BITCOIND_DIR"
    exit 0
fi

CACHE_ROOT="${POOL_CACHE_DIR:-$HOME/.cache/pool}"
OUT="$CACHE_ROOT/bitcoind-${SDIST_SHA256:0:16}"
if [ -x "$OUT/bitcoind" ] && [ -x "$OUT/bitcoin-cli" ]; then
    log "cached binaries in $OUT"
    echo "$OUT"
    exit 0
fi

need_pkgs=()
for pkg in cmake g++ pkg-config libboost-dev libevent-dev libsqlite3-dev libzmq3-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing Debian packages: ${need_pkgs[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2
fi

mkdir -p "$CACHE_ROOT"
WORK="$(mktemp -d "$CACHE_ROOT/build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

SDIST="$CACHE_ROOT/$SDIST_NAME"
if [ ! -f "$SDIST" ] || ! echo "$SDIST_SHA256  $SDIST" | sha256sum -c --status; then
    log "downloading $SDIST_SPEC source distribution"
    python3 -m pip download --quiet --no-deps --no-binary :all: "$SDIST_SPEC" -d "$WORK/dl" >&2
    mv "$WORK/dl/$SDIST_NAME" "$SDIST"
fi
echo "$SDIST_SHA256  $SDIST" | sha256sum -c --status || { log "sha256 mismatch for $SDIST"; exit 1; }

log "unpacking"
tar -xzf "$SDIST" -C "$WORK"
SRC="$(find "$WORK" -maxdepth 3 -type d -path '*/depend/bitcoin' | head -n1)"
[ -d "$SRC" ] || { log "no depend/bitcoin in sdist"; exit 1; }

JOBS="${POOL_BUILD_JOBS:-$(nproc)}"
log "configuring (this cold build takes about 15 minutes on 2 cores; it is cached afterwards)"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF -DBUILD_GUI=OFF \
    -DENABLE_IPC=OFF -DWITH_ZMQ=ON -DBUILD_CLI=ON -DBUILD_TX=OFF -DBUILD_UTIL=OFF -DBUILD_WALLET_TOOL=OFF \
    -DENABLE_WALLET=ON -DBUILD_KERNEL_LIB=OFF -DBUILD_FUZZ_BINARY=OFF >&2
log "building with $JOBS jobs"
cmake --build "$WORK/build" -j"$JOBS" --target bitcoind bitcoin-cli >&2

mkdir -p "$OUT.tmp"
cp "$(find "$WORK/build" -type f -name bitcoind -perm -u+x | head -n1)" "$OUT.tmp/bitcoind"
cp "$(find "$WORK/build" -type f -name bitcoin-cli -perm -u+x | head -n1)" "$OUT.tmp/bitcoin-cli"
strip "$OUT.tmp/bitcoind" "$OUT.tmp/bitcoin-cli" 2>/dev/null || true
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
# Also keep the real mainnet block the sdist carries; tests use it as a merkle vector.
BLK="$(find "$SRC" -name block413567.raw | head -n1)"
[ -n "$BLK" ] && cp "$BLK" "$OUT/block413567.raw"
log "built $OUT"
echo "$OUT"
