"""The one place that speaks bitcoind's JSON-RPC.

python-bitcoinrpc is blocking, so every call runs in a worker thread and the event loop never waits on the
node. Each thread keeps its own HTTP connection (the library's proxy is not thread-safe); a long poll gets a
thread of its own so it cannot starve share-path calls such as ``submitblock``. Callers see exactly two
exception types: ``NodeError`` (bitcoind answered with an error) and ``NodeUnavailable`` (it did not answer).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException

RPC_IN_WARMUP = -28


class NodeError(Exception):
    """bitcoind answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"bitcoind error {code}: {message}")
        self.code = code
        self.message = message


class NodeUnavailable(Exception):
    """bitcoind could not be reached or did not answer in time."""


@dataclass(frozen=True, slots=True)
class RpcCredentials:
    """Where and how to log in; the password never appears in repr or logs."""

    url: str
    user: str
    password: str
    cookie_file: str = ""

    def __repr__(self) -> str:
        return f"RpcCredentials(url={self.url!r}, user={self.user!r})"

    def resolve(self) -> tuple[str, str]:
        """User and password, read from the cookie file when one is set (bitcoind rewrites it on restart)."""
        if self.cookie_file:
            text = Path(self.cookie_file).read_text().strip()
            user, _, password = text.partition(":")
            return user, password
        return self.user, self.password


Observer = Callable[[str, float, str | None], None]


class NodeClient:
    """Async façade over python-bitcoinrpc with per-thread connections."""

    def __init__(self, creds: RpcCredentials, timeout: float = 30.0, observer: Observer | None = None) -> None:
        self._creds = creds
        self._timeout = timeout
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rpc")
        self._observer = observer

    def _proxy(self, timeout: float) -> AuthServiceProxy:
        key = f"proxy_{timeout}"
        proxy = getattr(self._local, key, None)
        if proxy is None:
            user, password = self._creds.resolve()
            parts = urlsplit(self._creds.url)
            netloc = f"rpc:rpc@{parts.hostname}:{parts.port or 8332}"
            proxy = AuthServiceProxy(urlunsplit((parts.scheme, netloc, parts.path or "/", "", "")), timeout=timeout)
            setattr(self._local, key, proxy)
            self._local.auth = b"Basic " + base64.b64encode(f"{user}:{password}".encode())
        return proxy

    def _drop_proxy(self, timeout: float) -> None:
        setattr(self._local, f"proxy_{timeout}", None)

    def _call_blocking(self, method: str, params: tuple[Any, ...], timeout: float) -> Any:
        start = time.monotonic()
        error: str | None = None
        try:
            fn = getattr(self._proxy(timeout), method)
            # Set the header ourselves: the library would send a percent-encoded password verbatim.
            fn._AuthServiceProxy__auth_header = self._local.auth
            return fn(*params)
        except JSONRPCException as exc:
            err = exc.error if isinstance(exc.error, dict) else {}
            code = int(err.get("code", -1))
            error = f"rpc_{code}"
            if code in (-342, -343):  # the library's own "bad HTTP response" codes: treat as unreachable
                self._drop_proxy(timeout)
                if "401" in str(err.get("message", "")):
                    error = "auth"
                    raise NodeError(
                        -401, "bitcoind refused the RPC credentials (check node.rpc_user/rpc_password or rpc_cookie_file)"
                    ) from exc
                raise NodeUnavailable(str(err.get("message", "bad response"))) from exc
            raise NodeError(code, str(err.get("message", ""))) from exc
        except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
            self._drop_proxy(timeout)
            error = "unavailable"
            raise NodeUnavailable(f"{method}: {type(exc).__name__}: {exc}") from exc
        finally:
            if self._observer is not None:
                self._observer(method, time.monotonic() - start, error)

    async def call(self, method: str, *params: Any) -> Any:
        """Run one RPC in a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call_blocking, method, params, self._timeout)

    async def longpoll_template(self, longpollid: str, timeout: float) -> Any:
        """``getblocktemplate`` long poll: returns when the tip changes or the mempool has news."""
        # A daemon thread, not the executor: a poll parked in bitcoind must never hold up process exit.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        params = ({"rules": ["segwit"], "longpollid": longpollid},)

        def deliver(ok: bool, value: Any) -> None:
            if not future.done():
                future.set_result(value) if ok else future.set_exception(value)

        def worker() -> None:
            try:
                result = self._call_blocking("getblocktemplate", params, timeout)
            except BaseException as exc:  # handed to the awaiting coroutine
                if not loop.is_closed():
                    loop.call_soon_threadsafe(deliver, False, exc)
                return
            if not loop.is_closed():
                loop.call_soon_threadsafe(deliver, True, result)

        threading.Thread(target=worker, name="rpc-longpoll", daemon=True).start()
        return await future

    async def get_template(self) -> Any:
        return await self.call("getblocktemplate", {"rules": ["segwit"]})

    async def wait_ready(self, deadline: float, on_wait: Callable[[str], None] | None = None) -> Any:
        """Wait through warm-up (-28) and refused connections until ``getblockchaininfo`` answers."""
        delay = 0.1
        while True:
            try:
                return await self.call("getblockchaininfo")
            except (NodeUnavailable, NodeError) as exc:
                if isinstance(exc, NodeError) and exc.code != RPC_IN_WARMUP:
                    raise
                if time.monotonic() > deadline:
                    raise NodeUnavailable(f"bitcoind not ready: {exc}") from exc
                if on_wait is not None:
                    on_wait(str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
