"""``pool run --config`` started as an operator starts it, for tests of what only the real command does (signals)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any


@contextlib.asynccontextmanager
async def pool_run(node: Any, tmp_path: Path, pool_address: str,
                   settings: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, bytes]]:
    """The pool on regtest ``node`` (RPC password from the environment, as operators keep it out of the file),
    with ``settings`` (TOML: at least a ``[stratum]`` section) added; yields the process and its start-up banner.
    Stopped with SIGTERM on the way out (killed if it has not exited within 30 s)."""
    config = tmp_path / "pool.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[node]\nrpc_url = "{node.rpc_url}"\nrpc_user = "{node.user}"\nnetwork = "regtest"\n'
        f'[payout]\npool_address = "{pool_address}"\n'
        '[difficulty]\nstart = 1e-8\nmin = 1e-10\n'
        '[metrics]\nenabled = false\n[logging]\nformat = "json"\n'
        + settings
    )
    env = {**os.environ, "POOL_RPC_PASSWORD": node.password}
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pool", "run", "--config", str(config),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env,
        )
        try:
            assert proc.stdout is not None
            banner = b""
            while b"Ctrl-C" not in banner:
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
                assert line, log.read_text()
                banner += line
            yield proc, banner
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
