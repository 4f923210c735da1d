#!/usr/bin/env bash
# Set up and run the pool. With no arguments: the embedded default (a regtest bitcoind the pool starts
# itself, SQLite ledger in ./data, Stratum on 127.0.0.1:3333). Arguments go to `pool run`, e.g. --config FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pool run "$@"
