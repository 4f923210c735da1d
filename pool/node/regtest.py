"""A regtest bitcoind the pool starts and owns: the embedded default mode and the integration tests.

Binaries come from ``scripts/build-bitcoind.sh`` (cached under ``~/.cache/pool``); ports are picked free on
127.0.0.1 and kept across restarts of the same node so tests can stop and start it mid-run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from pool.node.rpc import NodeError, NodeUnavailable, RpcCredentials

CACHE_ROOT = Path(os.environ.get("POOL_CACHE_DIR", Path.home() / ".cache" / "pool"))


class BitcoindNotFound(Exception):
    """No bitcoind binary: tell the operator how to build one."""


def find_bitcoind_dir(explicit: str = "") -> Path:
    """Directory holding bitcoind and bitcoin-cli: explicit setting, POOL_BITCOIND_DIR, then the build cache."""
    candidates: list[Path] = []
    for value in (explicit, os.environ.get("POOL_BITCOIND_DIR", "")):
        if value:
            candidates.append(Path(value))
    if CACHE_ROOT.is_dir():
        candidates.extend(sorted(CACHE_ROOT.glob("bitcoind-*"), key=lambda p: p.stat().st_mtime, reverse=True))
    for path in candidates:
        if (path / "bitcoind").is_file() and os.access(path / "bitcoind", os.X_OK):
            return path
    on_path = shutil.which("bitcoind")
    if on_path:
        return Path(on_path).parent
    raise BitcoindNotFound(
        "no bitcoind found: run `bash scripts/build-bitcoind.sh` (builds and caches a regtest bitcoind), "
        "or set regtest.bitcoind_dir / POOL_BITCOIND_DIR"
    )


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RegtestNode:
    """Start, stop and talk to one regtest bitcoind (synchronously; tests and the CLI call it off-loop)."""

    def __init__(self, datadir: Path, bin_dir: Path | None = None, rpc_port: int = 0, zmq_port: int = 0,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.datadir = Path(datadir)
        self.extra_args = tuple(extra_args)  # e.g. ("-rpcservertimeout=1",) for tests
        self.bin_dir = bin_dir or find_bitcoind_dir()
        self.rpc_port = rpc_port or free_port()
        self.p2p_port = free_port()
        self.zmq_port = zmq_port or free_port()
        self.user = "pool"
        self.password = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def zmq_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.zmq_port}"

    @property
    def credentials(self) -> RpcCredentials:
        return RpcCredentials(self.rpc_url, self.user, self.password)

    def start(self, timeout: float = 60.0) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.bin_dir / "bitcoind"),
            "-regtest",
            f"-datadir={self.datadir}",
            "-server=1",
            "-listen=1",
            "-bind=127.0.0.1",
            f"-port={self.p2p_port}",
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            f"-rpcport={self.rpc_port}",
            f"-rpcuser={self.user}",
            f"-rpcpassword={self.password}",
            f"-zmqpubhashblock={self.zmq_endpoint}",
            "-fallbackfee=0.0002",
            "-txindex=0",
            "-dnsseed=0",
            "-fixedseeds=0",
            "-discover=0",
            "-printtoconsole=0",
            "-rpcthreads=16",
            "-rpcworkqueue=256",
            "-maxmempool=300",
            "-acceptnonstdtxn=1",
            *self.extra_args,
        ]
        log = open(self.datadir / "bitcoind.stdout", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                tail = (self.datadir / "bitcoind.stdout").read_text(errors="replace")[-2000:]
                raise NodeUnavailable(f"bitcoind exited with {self.process.returncode}: {tail}")
            try:
                self.rpc("getblockchaininfo")
                return
            except (NodeUnavailable, NodeError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def rpc(self, method: str, *params: object, wallet: str | None = None, timeout: float = 60.0) -> object:
        """Synchronous RPC through the same client code the pool uses."""
        from pool.node.rpc import NodeClient

        url = self.rpc_url + (f"/wallet/{wallet}" if wallet else "")
        client = NodeClient(RpcCredentials(url, self.user, self.password), timeout=timeout)
        try:
            return client._call_blocking(method, params, timeout)
        finally:
            client.close()

    def ensure_wallet(self, name: str = "pool") -> None:
        """Create or load a wallet; a fresh regtest chain has none and getnewaddress needs one."""
        loaded = self.rpc("listwallets")
        if isinstance(loaded, list) and name in loaded:
            return
        try:
            self.rpc("loadwallet", name)
        except NodeError:
            self.rpc("createwallet", name)
