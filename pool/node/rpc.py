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
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException
from orjson import loads as fast_loads

RPC_IN_WARMUP = -28
_REFUSED_CREDENTIALS = "bitcoind refused the RPC credentials (check node.rpc_user/rpc_password or rpc_cookie_file)"



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
SentHook = Callable[[float], None]

# Failures that, on a keep-alive connection used before, mean bitcoind had closed it while it sat idle
# (``-rpcservertimeout``, 30 s by default): the request never reached a live peer, or no byte came back.
_STALE_ERRORS = (ConnectionError, http.client.CannotSendRequest, http.client.ResponseNotReady)


class _Connection(http.client.HTTPConnection):
    """HTTP connection that knows whether it has served a call before and when a request went out."""

    exchanges = 0  # completed request/answer round trips on this socket
    answer_started = False  # the status line of the current answer arrived
    on_sent: SentHook | None = None

    def connect(self) -> None:
        self.exchanges = 0  # a new socket: nothing on it can be stale yet
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.answer_started = False
        super().request(*args, **kwargs)
        if self.on_sent is not None:
            self.on_sent(time.perf_counter())

    def getresponse(self) -> http.client.HTTPResponse:
        response = super().getresponse()
        self.answer_started = True
        self.exchanges += 1
        return response


class _TlsConnection(_Connection, http.client.HTTPSConnection):
    pass


class NodeClient:
    """Async façade over python-bitcoinrpc with per-thread connections.

    ``workers`` threads, each with its own keep-alive connection. The block submitter gets a client of its
    own (one thread, one connection) so ``submitblock`` never queues behind template or maturity calls.
    """

    def __init__(self, creds: RpcCredentials, timeout: float = 30.0, observer: Observer | None = None,
                 workers: int = 4, name: str = "rpc", on_stale: Callable[[str], None] | None = None) -> None:
        self._creds = creds
        self._timeout = timeout
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._observer = observer
        self._on_stale = on_stale
        self.name = name

    @property
    def url(self) -> str:
        return self._creds.url

    def _proxy(self, timeout: float) -> tuple[AuthServiceProxy, _Connection]:
        key = f"proxy_{timeout}"
        entry = getattr(self._local, key, None)
        if entry is None:
            user, password = self._creds.resolve()
            parts = urlsplit(self._creds.url)
            host, port = parts.hostname or "127.0.0.1", parts.port or 8332
            conn_class = _TlsConnection if parts.scheme == "https" else _Connection
            conn = conn_class(host, port, timeout=timeout)
            netloc = f"rpc:rpc@{host}:{port}"
            proxy = AuthServiceProxy(urlunsplit((parts.scheme, netloc, parts.path or "/", "", "")), timeout=timeout,
                                     connection=conn)
            entry = (proxy, conn)
            setattr(self._local, key, entry)
            self._local.auth = b"Basic " + base64.b64encode(f"{user}:{password}".encode())
        return entry

    def _drop_proxy(self, timeout: float) -> None:
        entry = getattr(self._local, f"proxy_{timeout}", None)
        if entry is not None:
            entry[1].close()
        setattr(self._local, f"proxy_{timeout}", None)

    def _call_blocking(self, method: str, params: tuple[Any, ...], timeout: float,
                       on_sent: SentHook | None = None) -> Any:
        """One call from a worker thread; retried once at once when it met a stale keep-alive connection.

        Only a failure on a connection that served calls before, before any byte of the answer arrived, is
        retried (every call the pool makes is safe to repeat; a repeated ``submitblock`` answers "duplicate").
        A failure on a fresh connection is bitcoind being unavailable.
        """
        start = time.monotonic()
        error: str | None = None
        try:
            for attempt in (1, 2):
                proxy, conn = self._proxy(timeout)
                reused = conn.exchanges > 0
                try:
                    return self._attempt(proxy, conn, method, params, timeout, on_sent)
                except _STALE_ERRORS:
                    if attempt == 1 and reused and not conn.answer_started:
                        self._drop_proxy(timeout)
                        if self._on_stale is not None:
                            self._on_stale(method)
                        continue
                    raise
            raise AssertionError("unreachable")
        except NodeError as exc:
            error = "auth" if exc.code == -401 else f"rpc_{exc.code}"
            raise
        except NodeUnavailable:
            error = "unavailable"
            raise
        except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
            self._drop_proxy(timeout)
            error = "unavailable"
            raise NodeUnavailable(f"{method}: {type(exc).__name__}: {exc}") from exc
        finally:
            if self._observer is not None:
                self._observer(method, time.monotonic() - start, error)

    def _attempt(self, proxy: AuthServiceProxy, conn: _Connection, method: str, params: tuple[Any, ...],
                 timeout: float, on_sent: SentHook | None) -> Any:
        try:
            if method == "submitblock" and len(params) == 1 and isinstance(params[0], str):
                return self._submit_block(conn, params[0], on_sent)
            if method == "getblocktemplate":
                body = json.dumps({"jsonrpc": "1.0", "id": method, "method": method, "params": list(params)})
                return self._post(conn, method, (body.encode(),), on_sent)
        except NodeError as exc:
            if exc.code == -401:  # a restarted bitcoind wrote a new cookie: read it again at the next call
                self._drop_proxy(timeout)
            raise
        fn = getattr(proxy, method)
        # Set the header ourselves: the library would send a percent-encoded password verbatim.
        fn._AuthServiceProxy__auth_header = self._local.auth
        conn.on_sent = on_sent
        try:
            return fn(*params)
        except JSONRPCException as exc:
            err = exc.error if isinstance(exc.error, dict) else {}
            code = int(err.get("code", -1))
            if code in (-342, -343):  # the library's own "bad HTTP response" codes: treat as unreachable
                self._drop_proxy(timeout)
                if "401" in str(err.get("message", "")):
                    raise NodeError(-401, _REFUSED_CREDENTIALS) from exc
                raise NodeUnavailable(str(err.get("message", "bad response"))) from exc
            raise NodeError(code, str(err.get("message", ""))) from exc
        finally:
            conn.on_sent = None

    def _submit_block(self, conn: _Connection, block_hex: str, on_sent: SentHook | None) -> Any:
        """``submitblock`` written straight to the socket: a block is megabytes of hex, and the library's
        ``json.dumps`` plus the request's concatenation copies cost milliseconds before the first byte leaves.
        Headers and the start of the body go in one send, the hex itself from the caller's buffer."""
        # The body is built by hand, not by json: refuse what could break out of the string, as bitcoind
        # itself would answer a block that does not decode (a definite answer: never retried).
        if not block_hex.isascii() or '"' in block_hex or "\\" in block_hex:
            raise NodeError(-22, "Block decode failed (not hex)")
        head = b'{"jsonrpc":"1.0","id":"submitblock","method":"submitblock","params":["'
        return self._post(conn, "submitblock", (head, block_hex.encode("ascii"), b'"]}'), on_sent)

    def _post(self, conn: _Connection, method: str, body: tuple[bytes, ...], on_sent: SentHook | None) -> Any:
        """One JSON-RPC request on the keep-alive connection, answered by its ``result``, without the library.

        Used for the two calls whose payloads are megabytes: ``submitblock`` (see above) and
        ``getblocktemplate``, whose answer python-bitcoinrpc decodes with ``Decimal`` floats and then
        re-encodes in full for a debug log line even when debug logging is off: on a 2.3 MB mainnet template
        that is ~7 ms of GIL held in single C calls, taken from the threads that commit shares and answer
        miners at every new tip. Here the answer is decoded once, by ``fast_loads`` (bitcoind sends no floats
        in either answer)."""
        parts = urlsplit(self._creds.url)
        conn.answer_started = False
        conn.putrequest("POST", parts.path or "/", skip_accept_encoding=True)
        conn.putheader("Authorization", self._local.auth)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(sum(len(b) for b in body)))
        conn.endheaders(body[0])
        for chunk in body[1:]:
            conn.send(chunk)
        if on_sent is not None:
            on_sent(time.perf_counter())
        response = conn.getresponse()
        data = response.read()
        if response.getheader("Content-Type") != "application/json":
            if response.status == 401:
                raise NodeError(-401, _REFUSED_CREDENTIALS)
            raise NodeUnavailable(f"{method}: non-JSON HTTP response {response.status} {response.reason}")
        try:
            reply = fast_loads(data)
        except ValueError as exc:
            raise NodeUnavailable(f"{method}: unreadable answer: {exc}") from exc
        if not isinstance(reply, dict):
            raise NodeUnavailable(f"{method}: unexpected answer {str(reply)[:100]!r}")
        error = reply.get("error")
        if error:
            if not isinstance(error, dict):
                raise NodeError(-1, str(error)[:200])
            raise NodeError(int(error.get("code", -1)), str(error.get("message", "")))
        return reply.get("result")

    async def call(self, method: str, *params: Any) -> Any:
        """Run one RPC in a worker thread."""
        return await self.start_call(method, *params)

    def start_call(self, method: str, *params: Any, on_sent: SentHook | None = None) -> asyncio.Future[Any]:
        """Hand one RPC to a worker thread now (not at the caller's next ``await``); await the result later."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, self._call_blocking, method, params, self._timeout, on_sent)

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
