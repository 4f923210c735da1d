#!/usr/bin/env bash
# The test command: set up (venv, C extension, regtest bitcoind), lint, then the whole suite, integration
# tests against a real regtest bitcoind included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export POOL_BITCOIND_DIR="$(bash scripts/build-bitcoind.sh)"
.venv/bin/ruff check pool tests bench
exec .venv/bin/python -m pytest -q "$@"
