"""`pool run` as an operator starts it: embedded regtest default, a miner connects, SIGTERM stops everything."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pool.node.regtest import free_port
from tests.support.chain import bits_target, connect_miner

pytestmark = pytest.mark.integration

ERR_LOW_DIFFICULTY = 23
ADDRESS = re.compile(r"bcrt1[0-9a-z]+")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid ...; comm may contain spaces, so split after the last ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


async def _read_line(stream: asyncio.StreamReader, deadline: float) -> str:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no banner from `pool run`")
    line = await asyncio.wait_for(stream.readline(), remaining)
    if not line:
        raise RuntimeError("`pool run` closed its stdout")
    return line.decode(errors="replace")


async def test_cli_run_embedded_default(tmp_path: Path, bitcoind_dir: Path):
    port = free_port()
    args = [sys.executable, "-m", "pool", "run", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
    helptext = subprocess.run([sys.executable, "-m", "pool", "run", "--help"], capture_output=True, text=True,
                              timeout=30).stdout
    if "--metrics-port" in helptext:
        args += ["--metrics-port", "0"]
    env = dict(os.environ, POOL_BITCOIND_DIR=str(bitcoind_dir))
    stderr_path = tmp_path / "pool.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
            cwd=tmp_path, env=env, start_new_session=True,
        )
    miner = None
    drain: asyncio.Task | None = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        banner = []
        while not any("listening" in line for line in banner) or not ADDRESS.search("".join(banner)):
            banner.append(await _read_line(proc.stdout, deadline))
        text = "".join(banner)
        assert f"127.0.0.1:{port}" in text, text
        address = ADDRESS.search(text).group(0)

        async def drain_stdout() -> None:
            while await proc.stdout.readline():
                pass

        drain = asyncio.create_task(drain_stdout())

        bitcoinds = [pid for pid in _children(proc.pid) if "bitcoind" in _cmdline(pid)]
        assert len(bitcoinds) == 1, [(pid, _cmdline(pid)) for pid in _children(proc.pid)]

        miner = await connect_miner(port, f"{address}.w1")
        job = miner.job
        assert job is not None and len(job.prevhash) == 64
        # The embedded default starts at 0.001, never above the job's network difficulty (regtest's is lower).
        network_difficulty = (0xFFFF * 2**208) / bits_target(job.nbits)
        assert miner.difficulty == pytest.approx(min(0.001, network_difficulty), rel=1e-9)
        reply = await miner.submit(job, b"\x00" * miner.extranonce2_size, int(job.ntime, 16), 0)
        assert reply.get("result") is True or reply["error"][0] == ERR_LOW_DIFFICULTY, reply
        await miner.close()
        miner = None

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        assert code == 0, stderr_path.read_text()[-3000:]
        gone_by = time.monotonic() + 5
        while _alive(bitcoinds[0]) and time.monotonic() < gone_by:
            await asyncio.sleep(0.1)
        assert not _alive(bitcoinds[0]), "bitcoind outlived `pool run`"
    finally:
        if miner is not None:
            await miner.close()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # a bitcoind left behind in the pool's process group
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await drain
