"""The Stratum V1 protocol core, sans-IO: bytes in, events out, bytes to send.

It owns everything that is pure session state (subscription, extranonce, workers, negotiated version mask,
which difficulty each job was sent at) and answers the requests it can answer alone. Requests that need the
rest of the pool (share judgement, transaction lists) become events the server answers through
``answer``/``answer_submit``. Lines are processed one at a time by ``next_event`` so replies leave in the
order requests arrived, which miners that reuse one id for every submit rely on.

Framing is the first defence against a client that never sends a newline: ``LineFramer`` holds at most
``max_line`` bytes of an unfinished line. The output budget is the defence against a client that never reads:
the core counts the bytes it queued that the server has not taken, plus what the I/O layer still holds
(``backlog``), and stops processing lines the moment that passes ``max_pending_output`` -- after every reply,
not once per read, because one 64 KiB read of requests can ask for megabytes of answers. The server drops such
a connection (``over_budget``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orjson import loads as orjson_loads

from pool.bitcoin.target import DIFF1_TARGET
from pool.mining.jobs import Job
from pool.mining.shares import Reject, Rejected, ShareResult, Submission
from pool.mining.workers import AuthError, Worker
from pool.stratum.events import (
    Authorized,
    AuthorizeFailed,
    DifficultySuggested,
    Event,
    ProtocolError,
    ShareRefused,
    ShareSubmitted,
    Subscribed,
    TransactionsRequested,
)


class Deferred:
    """A reply whose place in the output is reserved before its content is known."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None


class LineTooLong(Exception):
    """The peer sent more than the cap without a newline; the connection must be closed."""


class LineFramer:
    """Splits a byte stream into lines; holds at most ``max_line`` bytes of an unfinished line."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_line: int = 16 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_line

    def feed(self, data: bytes) -> list[bytes]:
        """Append received bytes; return the complete lines (without terminators, blank lines dropped)."""
        self._buf += data
        if b"\n" not in data:
            if len(self._buf) > self._max:
                self._buf.clear()
                raise LineTooLong(f"line exceeds {self._max} bytes")
            return []
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        out = []
        for line in lines:
            if len(line) > self._max:
                self._buf.clear()
                raise LineTooLong(f"line exceeds {self._max} bytes")
            line = line.strip()
            if line:
                out.append(bytes(line))
        if len(self._buf) > self._max:
            self._buf.clear()
            raise LineTooLong(f"line exceeds {self._max} bytes")
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


ERR_OTHER = 20
ERR_JOB_NOT_FOUND = 21
ERR_UNAUTHORIZED = 24
ERR_NOT_SUBSCRIBED = 25
MAX_WORKERS_PER_SESSION = 64
_JOB_DIFFICULTY_MEMORY = 64


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """Per-connection protocol settings, derived from the pool config."""

    extranonce2_size: int = 8
    max_line: int = 16 * 1024
    pool_version_mask: int = 0x1FFFE000
    start_difficulty: float = 1.0
    max_payout_addresses: int = 0  # distinct payout addresses per connection (SOLO: a job each); 0 = no cap
    max_pending_output: int = 1 << 20  # bytes queued for the peer and not yet sent; beyond: drop it


Authorizer = Callable[[str, str], Worker]
# Given the extranonce1 a miner asks to resume (hex), return it as bytes if it may have it back, else None.
Resumer = Callable[[str], bytes | None]
# Bytes the I/O layer has taken but not yet sent (the transport's write buffer); they count against the budget.
Backlog = Callable[[], int]
_SERVER_REQUEST_BASE = 1 << 30  # ids of our own requests (client.get_version), far from any miner's ids


def _reject_constant(name: str) -> float:
    """NaN and Infinity are not JSON; echoing them back would break the miner's parser."""
    raise ValueError(f"non-JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _number(value: Any) -> float | None:
    """A positive finite number from a JSON number or a numeric string (cpuminer-opt sends '0.500000')."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # a 400-digit integer
            return None
        if math.isfinite(number) and number > 0:
            return number
    return None


class StratumProtocol:
    """One miner connection's protocol state machine."""

    # Slots: one of these lives per connection, and an instance dict of ~30 attributes costs ~1.5 KB.
    __slots__ = (
        "config", "extranonce1", "_authorize", "_resume", "_backlog", "requested_mask", "client_version",
        "_server_requests", "_next_server_request", "_framer", "_lines", "_line_at", "_out", "_queued", "deferred",
        "_slots", "_over_budget", "_fatal", "closed", "subscribed", "user_agent", "workers", "version_mask",
        "extranonce_subscribed", "minimum_difficulty", "difficulty", "_sent_difficulty", "_sent_jobs",
        "_transactions_sent", "current_job",
    )

    def __init__(self, config: ProtocolConfig, extranonce1: bytes, authorizer: Authorizer,
                 resumer: Resumer | None = None, backlog: Backlog | None = None) -> None:
        self.config = config
        self.extranonce1 = extranonce1
        self._authorize = authorizer
        self._resume = resumer
        self._backlog = backlog
        self.requested_mask = 0
        self.client_version: str | None = None
        self._server_requests: dict[int, str] = {}
        self._next_server_request = _SERVER_REQUEST_BASE
        self._framer = LineFramer(config.max_line)
        self._lines: list[bytes] = []  # complete lines not yet handled, from _line_at on (a list: small when idle)
        self._line_at = 0
        self._out: list[bytes | Deferred] = []  # in request order; a Deferred holds back what follows it
        self._queued = 0  # bytes in _out
        self.deferred = 0  # replies reserved and not yet settled
        self._slots = 0  # reserved replies still in _out, settled or not
        self._over_budget = False
        self._fatal: str | None = None
        self.closed = False
        self.subscribed = False
        self.user_agent = ""
        self.workers: dict[str, Worker] = {}
        self.version_mask = 0
        self.extranonce_subscribed = False
        self.minimum_difficulty: float | None = None
        self.difficulty = config.start_difficulty
        self._sent_difficulty: float | None = None
        # id sent in notify -> (job id in the pool's book, difficulty in force for it). Bounded per session.
        self._sent_jobs: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._transactions_sent: OrderedDict[str, None] = OrderedDict()  # jobs whose list went out
        self.current_job: Job | None = None

    # ---- input ---------------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer received bytes; call ``next_event`` until it returns None."""
        if self.closed or self._fatal or self.over_budget:
            return
        try:
            lines = self._framer.feed(data)
            if lines:
                self._lines.extend(lines)
        except LineTooLong as exc:
            self._fatal = str(exc)

    def next_event(self) -> Event | None:
        """Process buffered lines until one yields an event for the server.

        Returns None with lines left unprocessed once the output budget is exceeded (see ``over_budget``).
        """
        lines = self._lines
        while self._line_at < len(lines) and not self.closed:
            if self.over_budget:
                lines.clear()  # the connection is being dropped; nothing more is answered
                self._line_at = 0
                return None
            line = lines[self._line_at]
            self._line_at += 1
            event = self._handle_line(line)
            if event is not None:
                return event
        lines.clear()
        self._line_at = 0
        if self._fatal and not self.closed:
            reason, self._fatal = self._fatal, None
            self._send_error(None, ERR_OTHER, reason)
            self.closed = True
            return ProtocolError(reason, fatal=True)
        return None

    def _handle_line(self, line: bytes) -> Event | None:
        try:
            msg = _loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._send_error(None, ERR_OTHER, "Invalid JSON")
            return ProtocolError("invalid JSON", fatal=False)
        if not isinstance(msg, dict):
            self._send_error(None, ERR_OTHER, "Request must be a JSON object")
            return ProtocolError("request is not an object", fatal=False)
        req_id = msg.get("id")
        method = msg.get("method")
        if method is None and ("result" in msg or "error" in msg):
            # A reply to one of our requests; only client.get_version's answer is kept.
            if isinstance(req_id, int) and self._server_requests.pop(req_id, None) == "client.get_version":
                result = msg.get("result")
                if isinstance(result, str):
                    self.client_version = result[:128]
            return None
        if not isinstance(method, str):
            self._send_error(req_id, ERR_OTHER, "Missing method")
            return ProtocolError("missing method", fatal=False)
        params = msg.get("params", [])
        if params is None:
            params = []
        handler = _HANDLERS.get(method)
        if handler is None:
            self._send_error(req_id, ERR_OTHER, "Unknown method")
            return ProtocolError(f"unknown method {method[:64]!r}", fatal=False)
        if not isinstance(params, list | dict):
            self._send_error(req_id, ERR_OTHER, "params must be an array")
            return ProtocolError(f"{method}: params not an array", fatal=False)
        return handler(self, req_id, params)

    # ---- request handlers ----------------------------------------------------------------------------------

    def _on_subscribe(self, req_id: Any, params: Any) -> Event | None:
        args = params if isinstance(params, list) else []
        ua = args[0] if args and isinstance(args[0], str) else ""
        requested = args[1] if len(args) > 1 and isinstance(args[1], str) else None
        resumed: str | None = None
        if requested and not self.subscribed and self._resume is not None and len(requested) <= 16:
            previous = self._resume(requested.lower())
            if previous is not None:
                self.extranonce1 = previous
                resumed = requested.lower()
        self.user_agent = ua[:128]
        self.subscribed = True
        sid = self.extranonce1.hex()
        self._send_result(
            req_id,
            [[["mining.set_difficulty", sid], ["mining.notify", sid]], sid, self.config.extranonce2_size],
        )
        return Subscribed(self.user_agent, resumed)

    def _on_authorize(self, req_id: Any, params: Any) -> Event | None:
        args = params if isinstance(params, list) else []
        username = args[0] if args and isinstance(args[0], str) else ""
        password = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        if len(self.workers) >= MAX_WORKERS_PER_SESSION and username not in self.workers:
            self._send_error(req_id, ERR_UNAUTHORIZED, "Too many workers on one connection")
            return AuthorizeFailed(username[:128], "too many workers")
        try:
            worker = self._authorize(username, password)
        except AuthError as exc:
            self._send_error(req_id, ERR_UNAUTHORIZED, str(exc))
            return AuthorizeFailed(username[:128], str(exc))
        cap = self.config.max_payout_addresses
        addresses = {w.address for w in self.workers.values()}
        if cap and worker.address not in addresses and len(addresses) >= cap:
            message = f"At most {cap} payout addresses per connection; open another connection"
            self._send_error(req_id, ERR_UNAUTHORIZED, message)
            return AuthorizeFailed(username[:128], "too many payout addresses")
        first = not self.workers
        self.workers[username] = worker
        self._send_result(req_id, True)
        return Authorized(worker, first)

    def _on_submit(self, req_id: Any, params: Any) -> Event | None:
        args = params if isinstance(params, list) else []
        worker_name = args[0] if args and isinstance(args[0], str) else ""
        if not self.subscribed:
            return self._refuse(req_id, Rejected(Reject.NOT_SUBSCRIBED), worker_name)
        worker = self.workers.get(worker_name)
        if worker is None:
            return self._refuse(req_id, Rejected(Reject.UNAUTHORIZED, worker_name[:64]), worker_name)
        if not 5 <= len(args) <= 6:
            return self._refuse(req_id, Rejected(Reject.MALFORMED, "submit needs 5 or 6 params"), worker_name)
        job_id = args[1]
        if isinstance(job_id, int) and not isinstance(job_id, bool):
            job_id = f"{job_id:x}"
        fields = [job_id, *args[2:]]
        if not all(isinstance(f, str) for f in fields):
            return self._refuse(req_id, Rejected(Reject.MALFORMED, "submit params must be strings"), worker_name)
        version_bits = args[5] if len(args) == 6 else None
        if version_bits is not None and not self.version_mask:
            # Miners that never negotiated rolling send 00000000 (cgminer after set_version_mask, Bitaxe).
            if version_bits.strip("0"):
                return self._refuse(req_id, Rejected(Reject.BAD_VERSION, "no version rolling negotiated"), worker_name)
            version_bits = None
        fallback = self._sent_difficulty if self._sent_difficulty is not None else self.difficulty
        book_id, difficulty = self._sent_jobs.get(job_id, (job_id, fallback))
        sub = Submission(worker_name, book_id, args[2], args[3], args[4], version_bits)
        return ShareSubmitted(req_id, sub, worker, difficulty, self.version_mask)

    def _refuse(self, req_id: Any, rejected: Rejected, worker_name: str) -> Event:
        code, message = rejected.error
        self._send_error(req_id, code, message)
        return ShareRefused(rejected, worker_name[:128])

    def _on_configure(self, req_id: Any, params: Any) -> Event | None:
        args = params if isinstance(params, list) else []
        extensions = args[0] if args and isinstance(args[0], list) else []
        options = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        result: dict[str, Any] = {}
        event: Event | None = None
        for ext in extensions[:16]:
            if not isinstance(ext, str):
                continue
            if ext == "version-rolling":
                result.update(self._negotiate_version_rolling(options))
            elif ext == "minimum-difficulty":
                value = _number(options.get("minimum-difficulty.value"))
                result["minimum-difficulty"] = value is not None
                if value is not None:
                    self.minimum_difficulty = value
                    event = DifficultySuggested(value, minimum=True)
            elif ext == "subscribe-extranonce":
                self.extranonce_subscribed = True
                result["subscribe-extranonce"] = True
            else:
                result[ext[:64]] = False
        self._send_result(req_id, result)
        return event

    def _negotiate_version_rolling(self, options: dict[str, Any]) -> dict[str, Any]:
        mask_text = options.get("version-rolling.mask", "ffffffff")
        try:
            miner_mask = int(mask_text, 16) & 0xFFFFFFFF if isinstance(mask_text, str) else 0xFFFFFFFF
        except ValueError:
            miner_mask = 0
        min_bits = options.get("version-rolling.min-bit-count", 0)
        min_bits = min_bits if isinstance(min_bits, int) and not isinstance(min_bits, bool) else 0
        self.requested_mask = miner_mask
        mask = miner_mask & self.config.pool_version_mask
        if mask == 0 or mask.bit_count() < min_bits:
            self.version_mask = 0
            return {"version-rolling": False}
        self.version_mask = mask
        return {"version-rolling": True, "version-rolling.mask": f"{mask:08x}"}

    def _on_suggest_difficulty(self, req_id: Any, params: Any) -> Event | None:
        value = _number(params[0] if isinstance(params, list) and params else None)
        if value is None:
            self._send_error(req_id, ERR_OTHER, "Difficulty must be a positive number")
            return ProtocolError("bad suggest_difficulty", fatal=False)
        self._answer_hint(req_id)
        return DifficultySuggested(value)

    def _answer_hint(self, req_id: Any) -> None:
        """A difficulty hint sent with id null is a JSON-RPC notification and gets no reply: bfgminer sends
        ``suggest_target`` that way before subscribing and takes the next line as its subscribe reply."""
        if req_id is not None:
            self._send_result(req_id, True)

    def _on_suggest_target(self, req_id: Any, params: Any) -> Event | None:
        text = params[0] if isinstance(params, list) and params else None
        try:
            target = int(text, 16) if isinstance(text, str) and 0 < len(text) <= 64 else 0
        except ValueError:
            target = 0
        if target <= 0:
            self._send_error(req_id, ERR_OTHER, "Target must be 64 hex digits")
            return ProtocolError("bad suggest_target", fatal=False)
        self._answer_hint(req_id)
        return DifficultySuggested(DIFF1_TARGET / target)

    def _on_extranonce_subscribe(self, req_id: Any, params: Any) -> Event | None:
        self.extranonce_subscribed = True
        self._send_result(req_id, True)
        return None

    def _on_ping(self, req_id: Any, params: Any) -> Event | None:
        self._send_result(req_id, "pong")
        return None

    def _on_get_transactions(self, req_id: Any, params: Any) -> Event | None:
        """The job's transaction ids: the largest reply there is (about 67 bytes per transaction), so only for
        a logged-in session, only for a job it was sent (no params: its current job) and only once per job."""
        if not self.workers:
            self._send_error(req_id, ERR_UNAUTHORIZED, "Unauthorized worker")
            return ProtocolError("get_transactions before authorize", fatal=False)
        args = params if isinstance(params, list) else []
        job_id = args[0] if args else (self.current_job.job_id if self.current_job is not None else "")
        if isinstance(job_id, int) and not isinstance(job_id, bool):
            job_id = f"{job_id:x}"
        sent = self._sent_jobs.get(job_id) if isinstance(job_id, str) else None
        if sent is not None:
            job_id = sent[0]  # an alias (difficulty re-send) asks for the same job's transactions
        elif self.current_job is None or job_id != self.current_job.job_id:
            self._send_error(req_id, ERR_JOB_NOT_FOUND, "Job not found")
            return ProtocolError("get_transactions for a job this session was not sent", fatal=False)
        if job_id in self._transactions_sent:
            self._send_error(req_id, ERR_OTHER, "Transactions of this job were already sent")
            return ProtocolError("get_transactions repeated for one job", fatal=False)
        return TransactionsRequested(req_id, job_id)

    # ---- output --------------------------------------------------------------------------------------------

    def set_difficulty(self, difficulty: float) -> None:
        """Difficulty for the next job; it reaches the miner just before that job's notify."""
        self.difficulty = difficulty

    def job_difficulty(self, job: Job) -> float:
        """The difficulty this session would be sent ``job`` at: never above the job's network difficulty,
        because miners only submit hashes that meet the share target and a block easier than that (regtest,
        testnet min-difficulty blocks, signet) would never reach the pool."""
        return min(self.difficulty, job.network_difficulty)

    def send_job(self, job: Job, clean_jobs: bool, alias: str | None = None) -> None:
        """Queue ``mining.notify`` (preceded by ``set_difficulty`` when it changed) and remember its difficulty.

        ``alias`` re-sends the same job under a new id, so a difficulty change applies to that id alone while
        shares for ids already sent are judged at the difficulty they were sent at. Aliases live only in this
        session (bounded memory); shares under them are judged against the job itself.
        """
        difficulty = self.job_difficulty(job)
        if self._sent_difficulty != difficulty:
            self._send_notification("mining.set_difficulty", [difficulty])
            self._sent_difficulty = difficulty
        sent_id = alias or job.job_id
        self._sent_jobs[sent_id] = (job.job_id, difficulty)
        self._sent_jobs.move_to_end(sent_id)
        while len(self._sent_jobs) > _JOB_DIFFICULTY_MEMORY:
            self._sent_jobs.popitem(last=False)
        self.current_job = job
        if alias is None:
            self._write_bytes(job.notify_line(clean_jobs))  # the same bytes for every miner of this job
        else:
            params = job.notify_params(clean_jobs)
            params[0] = sent_id
            self._send_notification("mining.notify", params)

    def answer_submit(self, req_id: Any, result: ShareResult) -> None:
        """Reply to a ShareSubmitted event: true, or the reject's Stratum error."""
        self._write_bytes(_submit_reply(req_id, result))

    def answer(self, req_id: Any, result: Any) -> None:
        self._send_result(req_id, result)

    def answer_transactions(self, req_id: Any, job_id: str, txids: list[str]) -> None:
        """Reply to a TransactionsRequested event; the job's list is never sent to this session again."""
        self._transactions_sent[job_id] = None
        while len(self._transactions_sent) > _JOB_DIFFICULTY_MEMORY:
            self._transactions_sent.popitem(last=False)
        self._send_result(req_id, txids)

    def answer_error(self, req_id: Any, code: int, message: str) -> None:
        self._send_error(req_id, code, message)

    def set_extranonce(self, extranonce1: bytes) -> bool:
        """Give the miner a new extranonce1; only for miners that subscribed to extranonce changes.

        The caller must send fresh work next: miners apply the change from the next notify on.
        """
        if not self.extranonce_subscribed:
            return False
        self.extranonce1 = extranonce1
        self._sent_jobs.clear()
        self._send_notification("mining.set_extranonce", [extranonce1.hex(), self.config.extranonce2_size])
        return True

    def set_pool_version_mask(self, pool_mask: int) -> int:
        """The pool's mask changed: tell a rolling miner its new mask (miner's request AND the pool's)."""
        self.config = dataclasses.replace(self.config, pool_version_mask=pool_mask)
        if not self.version_mask:
            return 0
        self.version_mask = self.requested_mask & pool_mask
        self._send_notification("mining.set_version_mask", [f"{self.version_mask:08x}"])
        return self.version_mask

    def request_client_version(self) -> None:
        """Ask the miner for its version (``client.get_version``); the answer lands in ``client_version``."""
        req_id = self._next_server_request
        self._next_server_request += 1
        self._server_requests[req_id] = "client.get_version"
        if len(self._server_requests) > 8:
            self._server_requests.pop(next(iter(self._server_requests)))
        self._write({"id": req_id, "method": "client.get_version", "params": []})

    def send_reconnect(self, host: str, port: int, wait_seconds: int = 0) -> None:
        self._send_notification("client.reconnect", [host, port, wait_seconds])

    def send_reconnect_same(self) -> None:
        """``client.reconnect`` with no parameters: reconnect to the same host and port."""
        self._send_notification("client.reconnect", [])

    def show_message(self, text: str) -> None:
        self._send_notification("client.show_message", [text])

    def data_to_send(self) -> bytes:
        """Bytes queued for the peer since the last call, up to the first reply still being decided."""
        out = self._out
        if not out:
            return b""
        if not self._slots:
            data = b"".join(out)  # type: ignore[arg-type]
            out.clear()
            self._queued = 0
            return data
        ready: list[bytes] = []
        taken = 0
        for item in out:
            if isinstance(item, Deferred):
                if item.data is None:
                    break
                self._slots -= 1
                item = item.data
            ready.append(item)
            taken += 1
        del out[:taken]
        data = b"".join(ready)
        self._queued -= len(data)
        return data

    def defer_reply(self) -> Deferred:
        """Reserve the place of a reply decided later (a share answered after its ledger commit): everything
        queued after it waits, so replies leave in request order however many shares are in flight."""
        slot = Deferred()
        self._out.append(slot)
        self.deferred += 1
        self._slots += 1
        return slot

    def settle(self, slot: Deferred, req_id: Any, result: ShareResult) -> None:
        """Fill a reserved reply: ``true``, or the reject's Stratum error."""
        if slot.data is not None:
            return
        slot.data = _submit_reply(req_id, result)
        self._queued += len(slot.data)
        self.deferred -= 1

    @property
    def pending_output(self) -> int:
        """Bytes on their way to the peer: queued here and not yet taken, plus the I/O layer's backlog."""
        return self._queued + (self._backlog() if self._backlog is not None else 0)

    @property
    def over_budget(self) -> bool:
        """The peer is not reading what it asks for: the server must drop the connection. Once true it stays
        true, so nothing more is processed whatever the server takes from the queue afterwards."""
        if not self._over_budget and self.pending_output > self.config.max_pending_output:
            self._over_budget = True
        return self._over_budget

    def _send_result(self, req_id: Any, result: Any) -> None:
        self._write({"id": req_id, "result": result, "error": None})

    def _send_error(self, req_id: Any, code: int, message: str) -> None:
        self._write({"id": req_id, "result": None, "error": [code, message, None]})

    def _send_notification(self, method: str, params: list[Any]) -> None:
        self._write({"id": None, "method": method, "params": params})

    def _write(self, obj: dict[str, Any]) -> None:
        self._write_bytes(_encode(obj))

    def _write_bytes(self, data: bytes) -> None:
        self._out.append(data)
        self._queued += len(data)


_PLAIN = frozenset({str, int, bool, type(None)})  # what orjson reads exactly as json does (floats may not be)


def _loads(line: bytes) -> Any:
    """One request line. orjson first (~0.3 µs for a submit against ~1.9 µs with json: every share pays it);
    the standard decoder (exact integers, finite floats only, no NaN) decides whenever the two could differ:
    orjson refuses NaN, infinities and lone surrogates (so does the fallback, or it is an error either way)
    and reads integers past 64 bits as floats, which would echo a miner's huge id inexactly: so any float,
    list or object in the id or the parameters (rare: ``suggest_difficulty``) is read again by json."""
    try:
        msg = orjson_loads(line)
    except ValueError:
        msg = None  # the standard decoder gives the verdict (and its exception)
    else:  # kept when the id and every parameter are plain strings, integers, booleans or null
        if type(msg) is dict and type(msg.get("id")) in _PLAIN:
            params = msg.get("params")
            if params is None:
                return msg
            if type(params) is list:
                for value in params:
                    if type(value) not in _PLAIN:
                        break
                else:
                    return msg
    return json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float)


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"


_TRUE_TAIL = b',"result":true,"error":null}\n'
_REJECT_TAILS: dict[Reject, bytes] = {}


def _submit_reply(req_id: Any, result: ShareResult) -> bytes:
    """``true``, or the reject's Stratum error, for one ``mining.submit``: for an integer id (what miners
    send) spliced from bytes made once, the same bytes ``_encode`` gives, without a JSON encoder per share."""
    if type(req_id) is not int:
        if isinstance(result, Rejected):
            code, message = result.error
            return _encode({"id": req_id, "result": None, "error": [code, message, None]})
        return _encode({"id": req_id, "result": True, "error": None})
    head = b'{"id":%d' % req_id
    if isinstance(result, Rejected):
        tail = _REJECT_TAILS.get(result.reason)
        if tail is None:
            code, message = result.error
            error = json.dumps([code, message, None], separators=(",", ":"))
            tail = _REJECT_TAILS[result.reason] = b',"result":null,"error":' + error.encode() + b"}\n"
        return head + tail
    return head + _TRUE_TAIL


_HANDLERS: dict[str, Callable[[StratumProtocol, Any, Any], Event | None]] = {
    "mining.subscribe": StratumProtocol._on_subscribe,
    "mining.authorize": StratumProtocol._on_authorize,
    "mining.submit": StratumProtocol._on_submit,
    "mining.configure": StratumProtocol._on_configure,
    "mining.suggest_difficulty": StratumProtocol._on_suggest_difficulty,
    "mining.suggest_target": StratumProtocol._on_suggest_target,
    "mining.extranonce.subscribe": StratumProtocol._on_extranonce_subscribe,
    "mining.ping": StratumProtocol._on_ping,
    "mining.get_transactions": StratumProtocol._on_get_transactions,
}
