"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb in a temp dir, a free port on 127.0.0.1,
its Unix socket inside that dir, stopped and removed at the end.

PostgreSQL refuses to run as root, so as root the cluster belongs to an unprivileged user (``postgres`` when
the Debian package created it, else ``nobody``) and every server command runs through ``runuser``. Local
TCP connections as ``pool`` are trusted; every other role must give its password (scram), which is how the
tests check ``POOL_LEDGER_PASSWORD``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SUPERUSER = "pool"


class PostgresNotFound(RuntimeError):
    pass


def find_bin_dir() -> Path:
    """``POOL_PG_BIN``, else the newest /usr/lib/postgresql/*/bin with initdb (Debian's layout)."""
    env = os.environ.get("POOL_PG_BIN")
    if env and (Path(env) / "initdb").exists():
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise PostgresNotFound("PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb): run"
                           " scripts/setup.sh as root (it installs Debian's postgresql package) or set POOL_PG_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="pool-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres" if _user_exists("postgres") else "nobody"
        self._names = itertools.count(1)
        self.running = False

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        # cwd: the cluster's own directory, which the server's user can enter (the caller's may be private).
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if check and done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()} {log}")
        return done

    def init(self) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                  "-E", "UTF8", "--no-instructions")
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"local all {SUPERUSER} trust\nhost all {SUPERUSER} 127.0.0.1/32 trust\n"
                       "host all all 127.0.0.1/32 scram-sha-256\n")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
                " -c shared_buffers=32MB")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts,
                  "-w", "-t", "60", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                      check=False)
            self.running = False

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, prefix: str = "t", template: str | None = None) -> str:
        """A new database (empty, or a copy of ``template``, which nobody may be connected to); its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        try:
            self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        except Exception:  # noqa: BLE001 - best effort at teardown; the cluster goes away anyway
            pass

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def start_cluster(bin_dir: Path | None = None) -> PgCluster:
    cluster = PgCluster(bin_dir)
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    deadline = time.monotonic() + 30
    while True:
        try:
            cluster.admin("SELECT 1")
            return cluster
        except Exception:
            if time.monotonic() > deadline:
                cluster.destroy()
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def cluster_or_skip() -> Iterator[PgCluster]:
    """A throwaway cluster for one test or session, destroyed after; the test is skipped when no PostgreSQL
    server is installed, except on CI, where that is a failure (scripts/setup.sh installs it)."""
    import pytest

    try:
        cluster = start_cluster()
    except PostgresNotFound as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.destroy()
