"""The processes of ``stratum_load``: the pool under test, the echo baseline and the load generators.

Why separate processes: the pool, its load and its baseline must each have their own event loop and core
share, as in production; the orchestrator only starts them, reads their CPU and memory from /proc and passes
commands. The pool runs as ``pool run --config`` does (uvloop), with two bench-only hooks in its process:
the open-files limit raised to the hard limit, and cProfile of the loop thread between SIGUSR1 and SIGUSR2.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from loadgen import raise_nofile  # noqa: E402
from mainnet_node import MainnetNode  # noqa: E402

POOL_ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"  # a well-known mainnet P2WPKH address
TICK = os.sysconf("SC_CLK_TCK")

# ---- processes -------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (all threads) or of one of its threads."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICK


def tree(pid: int) -> list[int]:
    """The process and its descendants (a multi-process pool's front-ends count as the pool)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                pass
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU of the process and its live descendants (a child that exits inside a window drops out of the sum)."""
    total = 0.0
    for p in tree(pid):
        seconds = cpu_seconds(p)
        if seconds == seconds:  # NaN: it exited meanwhile
            total += seconds
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of the process and its descendants (shared pages of forked children count twice)."""
    return sum(_rss(p) for p in tree(pid))


def _rss(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Cpu:
    """CPU of several processes over a window of wall time: ``(pid, None)`` is the process with its descendants
    (all threads), ``(pid, 0)`` the process alone (all threads), ``(pid, tid)`` one thread."""

    def __init__(self, pids: dict[str, tuple[int, int | None]]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.c0 = {k: self._read(*v) for k, v in pids.items()}

    @staticmethod
    def _read(pid: int, tid: int | None) -> float:
        if tid is None:
            return tree_cpu_seconds(pid)
        return cpu_seconds(pid, tid or None)

    def done(self) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        return {k: (self._read(*v) - self.c0[k]) / dt for k, v in self.pids.items()}


def to_toml(settings: dict[str, dict[str, Any]]) -> str:
    """Top-level keys (section "") and one table per section; values are str, bool, int or float."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return json.dumps(str(v))  # a TOML basic string is a JSON string for these values

    lines = [f"{k} = {value(v)}" for k, v in settings.get("", {}).items()]
    for section, table in settings.items():
        if section:
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` from the command line: a number, true/false, or else a string."""
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise ValueError(f"--set wants section.key=value, got {text!r}")
    if raw in ("true", "false"):
        return key, raw == "true"
    for kind in (int, float):
        try:
            return key, kind(raw)
        except ValueError:
            pass
    return key, raw


class Pool:
    """``pool run --config`` in a child process (uvloop, as operators run it), pointed at a mainnet-like node."""

    def __init__(self, node: MainnetNode, tmp: Path, name: str, profile: Path | None = None,
                 overrides: dict[str, Any] | None = None) -> None:
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        info = node.info
        config = self.dir / "pool.toml"
        settings: dict[str, dict[str, Any]] = {
            "": {"data_dir": str(self.dir / "data")},
            "node": {"rpc_url": info["rpc_url"], "rpc_user": info["user"], "rpc_password": info["password"],
                     "network": "main", "zmq_hashblock": info["zmq"], "refresh_interval": 110},
            "stratum": {"host": "127.0.0.1", "port": 0, "pool_tag": "/pool-bench/", "submit_rate": 1e6,
                        "submit_burst": 1e7, "invalid_share_limit": 1_000_000, "connect_rate_per_ip": 1e6,
                        "connect_burst_per_ip": 1e7, "max_connections_per_ip": 10_000_000,
                        # One process unless --set stratum.processes=N: the baselines and README figures are N = 1.
                        "processes": 1},
            "difficulty": {"start": 1.0, "min": 1e-12, "max": 1e18},
            "payout": {"scheme": "pplns", "pool_address": POOL_ADDRESS},
            "metrics": {"enabled": False},
            "logging": {"level": "warning", "format": "json"},
        }
        for key, value in (overrides or {}).items():
            section, _, name = key.rpartition(".")
            settings.setdefault(section, {})[name] = value
        config.write_text(to_toml(settings))
        env = dict(os.environ)
        if profile is not None:
            env["STRATUM_LOAD_PROFILE"] = str(profile)
        self.log = open(self.dir / "pool.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, str(HERE / "procs.py"), "pool", str(config)],
                                     stdout=subprocess.PIPE, stderr=self.log, env=env, cwd=REPO_ROOT)
        self.port = 0
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            match = re.search(r"Stratum listening on [\d.]+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        if not self.port:
            self.stop()
            raise RuntimeError(f"pool did not start: {(self.dir / 'pool.log').read_text()[-1500:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def pool_child(config_path: str) -> int:
    """The pool process: the open-files limit raised to the hard limit, optional cProfile of the loop thread
    between SIGUSR1 and SIGUSR2, then exactly ``pool run --config``."""
    raise_nofile()
    sys.path.insert(0, str(REPO_ROOT))
    out = os.environ.get("STRATUM_LOAD_PROFILE")
    if out:
        import cProfile

        prof = cProfile.Profile()
        signal.signal(signal.SIGUSR1, lambda *_: prof.enable())

        def dump(*_: Any) -> None:
            prof.disable()
            prof.dump_stats(out)

        signal.signal(signal.SIGUSR2, dump)
    from pool.__main__ import main as pool_main

    return pool_main(["run", "--config", config_path])


class Echo:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), "echo"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(json.loads(self.proc.stdout.readline())["port"])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()


class Miners:
    """A load-generator process holding ``connections`` miners on ``port``."""

    def __init__(self, port: int, connections: int, difficulty: float | None, wait: bool = True) -> None:
        spec = {"port": port, "connections": connections, "login": difficulty is not None,
                "difficulty": difficulty or 0, "username": f"{POOL_ADDRESS}.bench"}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), "client", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        ready = self.read()
        if "ready" not in ready:
            self.stop()
            raise RuntimeError(f"load generator: {ready}")

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited ({self.proc.wait()})")
        return dict(json.loads(line))

    def command(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None  # end of input: the client closes its connections and exits
                self.proc.stdin.close()
                self.proc.wait(20)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Fleet:
    """``connections`` miners split over ``procs`` load-generator processes (a new-tip watch needs more than one
    client core at 10,000 connections: see the echo baseline's "last" column)."""

    def __init__(self, port: int, connections: int, difficulty: float | None, procs: int) -> None:
        sizes = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
        self.parts = [Miners(port, size, difficulty, wait=False) for size in sizes if size]
        try:
            for part in self.parts:
                part.wait_ready()
        except Exception:
            self.stop()
            raise

    def command(self, **cmd: Any) -> dict[str, Any]:
        for part in self.parts:
            part.send(**cmd)
        replies = [part.read() for part in self.parts]
        if cmd["cmd"] != "report":
            return replies[0]
        firsts = [r["first"] for r in replies if r["first"] is not None]
        lasts = [r["last"] for r in replies if r["last"] is not None]
        return {"seen": sum(r["seen"] for r in replies), "of": sum(r["of"] for r in replies),
                "first": min(firsts) if firsts else None, "last": max(lasts) if lasts else None}

    def stop(self) -> None:
        for part in self.parts:
            part.stop()



if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "pool":
        sys.exit(pool_child(sys.argv[2]))
    print("usage: procs.py pool CONFIG  (started by bench/stratum_load.py)", file=sys.stderr)
    sys.exit(2)
