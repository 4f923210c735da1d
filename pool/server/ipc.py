"""The link between the coordinator process and its Stratum front-end processes: framing and batching.

Both ends are this program, over a Unix-domain socket in a directory only the pool's user can enter, so the
payloads are pickles. A frame is a 5-byte header (payload length, big-endian u32; kind, u8) and the payload.
Frames that happen often (accepted shares one way, their commit acknowledgments the other) are batched: items
queued during one turn of the event loop leave together in one frame at the end of it, so a burst of shares
costs one ``write`` and one pickle instead of one per share. A template is pickled once and the same bytes are
written to every front-end (``encode_raw``).
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import structlog

log = structlog.get_logger("pool.ipc")

HEADER = struct.Struct(">IB")
MAX_FRAME = 256 << 20  # a mainnet template pickles to ~2 MB; anything near this is a bug, not data


class Kind(IntEnum):
    """What a frame carries; (c) coordinator -> front-end, (f) front-end -> coordinator."""

    HELLO = 1  # (f) index, pid, token
    WELCOME = 2  # (c) config, node RPC credentials, pool payout script, extranonce1 values open for resume
    TEMPLATE = 3  # (c) TEMPLATE_HEAD + one pickled PreparedTemplate, the same bytes to every front-end
    OPS = 4  # (f) batch of ledger writes: (seq, op, payload)
    ACKS = 5  # (c) batch of their outcomes after the commit: (seq, None) or (seq, (kind, message))
    STATS = 6  # (f) metrics snapshot, session counts, per-worker rejects, unresolved blocks (every second)
    RELEASED = 7  # (f->c->f) extranonce1 values a front-end released (open for resume elsewhere)
    CLAIMED = 8  # (f->c->f) extranonce1 values a front-end resumed (withdrawn everywhere else)
    COMMAND = 9  # (c) (id, name, args): reconnect, version mask, TLS reload, stop
    REPLY = 10  # (f) (id, result)
    FOUND = 11  # (f) a block was found (FoundBlock without its hex): the coordinator's view and a new template
    READY = 12  # (f) listening: (port, tls_port)
    REFUSED = 13  # (c) this front-end is not wanted (bad token, index taken): it exits
    SITES = 14  # (f) batch of site events: logins, shares, closes, refusals (pool/programme/remote.py)
    EVENT = 15  # (f) (what, value): an allowlist drain finished in this front-end


# New tip; new work (a broadcast: adopt it even if it looks like the current work, the coordinator renewed it on
# purpose) or the current work again (to a front-end that (re)joins); coordinator's monotonic clock when sent.
TEMPLATE_HEAD = struct.Struct(">??d")
BATCHED = frozenset({Kind.OPS, Kind.ACKS, Kind.RELEASED, Kind.CLAIMED, Kind.SITES})


class FrameError(Exception):
    """The peer sent something that is not a frame of ours: the link is dropped."""


def encode(kind: Kind, obj: Any) -> bytes:
    return encode_raw(kind, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def encode_raw(kind: Kind, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise FrameError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(payload), kind) + payload


class FrameDecoder:
    """Bytes in, whole frames out (kind, payload); keeps a partial frame between calls."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[Kind, bytes]]:
        buf = self._buf
        buf += data
        frames: list[tuple[Kind, bytes]] = []
        at = 0
        size = HEADER.size
        while len(buf) - at >= size:
            length, kind = HEADER.unpack_from(buf, at)
            if length > MAX_FRAME:
                raise FrameError(f"frame of {length} bytes announced")
            if len(buf) - at - size < length:
                break
            try:
                frames.append((Kind(kind), bytes(buf[at + size : at + size + length])))
            except ValueError as exc:
                raise FrameError(f"unknown frame kind {kind}") from exc
            at += size + length
        if at:
            del buf[:at]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


FrameHandler = Callable[[Kind, bytes], None]


class Link(asyncio.Protocol):
    """One end of the socket: whole frames to ``on_frame``; ``send`` writes now, ``queue`` batches per loop turn."""

    def __init__(self, on_frame: FrameHandler, on_lost: Callable[[Link], None] | None = None) -> None:
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._decoder = FrameDecoder()
        self._batches: dict[Kind, list[Any]] = {}
        self._flush_scheduled = False
        self.connected = asyncio.get_running_loop().create_future()

    # ---- asyncio.Protocol ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            log.error("ipc_bad_frame", error=str(exc))
            self.close()
            return
        for kind, payload in frames:
            if self.closed:
                return
            try:
                self.on_frame(kind, payload)
            except Exception:  # one bad message must not kill the link's reader
                log.exception("ipc_frame_failed", kind=kind.name)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._batches.clear()
        if self.on_lost is not None:
            self.on_lost(self)

    # ---- output ----------------------------------------------------------------------------------------------

    def send(self, kind: Kind, obj: Any) -> bool:
        return self.send_raw(encode(kind, obj))

    def send_raw(self, frame: bytes) -> bool:
        """Write an encoded frame at once (after any batch already due, so order per kind holds)."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        if self._batches:
            self.flush()
        self.transport.write(frame)
        return True

    def queue(self, kind: Kind, item: Any) -> None:
        """Add ``item`` to this loop turn's batch of ``kind`` (one frame of a list at the end of the turn)."""
        if self.closed:
            return
        batch = self._batches.get(kind)
        if batch is None:
            batch = self._batches[kind] = []
        batch.append(item)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._batches or self.closed or self.transport is None:
            return
        batches, self._batches = self._batches, {}
        self.transport.write(b"".join(encode(kind, items) for kind, items in batches.items()))

    @property
    def write_backlog(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
