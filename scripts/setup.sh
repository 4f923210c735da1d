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
