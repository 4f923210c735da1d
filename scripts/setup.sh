#!/usr/bin/env bash
# Set up everything the pool and its tests need on a fresh machine: a virtualenv with the project
# (C extension compiled) and its test tools, a cached regtest bitcoind, and Debian's Chromium for the
# dashboard's browser tests. Safe to run again: fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.pool-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] || [ pool/_sharecheck.c -nt "$stamp" ]; then
    echo "[setup] installing the pool and its test dependencies into .venv" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel >&2
    .venv/bin/python -m pip install --quiet -e ".[test]" >&2
    touch "$stamp"
fi
bash scripts/build-bitcoind.sh >/dev/null
# The PostgreSQL ledger's tests start a throwaway cluster with Debian's server binaries: install them if missing
# (as root; otherwise say how, and those tests skip with the reason; on CI they must run).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${POOL_PG_BIN:-}" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "[setup] PostgreSQL server not found and apt-get unavailable: the PostgreSQL ledger tests will skip" \
             "(install PostgreSQL and set POOL_PG_BIN to its bin directory)" >&2
    elif [ "$(id -u)" -ne 0 ]; then
        echo "[setup] PostgreSQL server not found: run 'sudo apt-get install -y postgresql' (the PostgreSQL" \
             "ledger tests skip until then)" >&2
    else
        echo "[setup] installing PostgreSQL (Debian package postgresql) for the PostgreSQL ledger tests" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
        # The package starts a system cluster; the tests bring their own, so it is not needed.
        if command -v pg_lsclusters >/dev/null 2>&1; then
            pg_lsclusters -h 2>/dev/null | while read -r version name _; do
                pg_ctlcluster "$version" "$name" stop >/dev/null 2>&1 || true
            done
        fi
    fi
fi
# The dashboard tests drive a real headless Chromium from the distribution's packages (Playwright is only the
# driver: its own browser download is never used). Without it those tests skip, naming the reason (on CI they fail).
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing chromium (apt-get) for the dashboard's browser tests" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
    else
        echo "[setup] /usr/bin/chromium is missing and cannot be installed here (needs root and apt-get):" \
             "the dashboard's browser tests will skip; as root: apt-get update && apt-get install -y chromium" >&2
    fi
fi
