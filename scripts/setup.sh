#!/usr/bin/env bash
# Set up everything the pool and its tests need on a fresh machine: a virtualenv with the project
# (C extension compiled) and its test tools, and a cached regtest bitcoind. Safe to run again: fast when done.
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
