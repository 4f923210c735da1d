#!/usr/bin/env bash
# The test command: set up (venv, C extension, regtest bitcoind), lint, then the whole suite, integration
# tests against a real regtest bitcoind included, then the integration suite again with two Stratum processes.
# Extra arguments go to pytest (and run that one pass only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export POOL_BITCOIND_DIR="$(bash scripts/build-bitcoind.sh)"
.venv/bin/ruff check pool tests bench
if [ "$#" -gt 0 ]; then
    exec .venv/bin/python -m pytest -q "$@"
fi
.venv/bin/python -m pytest -q
# The integration suite once more with two Stratum front-end processes and a coordinator (the default on a
# multi-core machine is one front-end per core); tests that read the one process's objects skip with a reason.
POOL_TEST_PROCESSES=2 exec .venv/bin/python -m pytest -q tests/integration
