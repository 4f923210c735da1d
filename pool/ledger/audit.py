"""The append-only, hash-chained audit log: every block, credit change and payment, in order.

Each entry's hash covers the previous entry's hash and the entry's canonical JSON, so editing, deleting or
reordering any past row breaks every hash after it; ``verify`` finds the first broken link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def canonical(payload: dict[str, Any]) -> str:
    """Deterministic JSON (sorted keys, no spaces) so any tool can recompute the hashes."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash(prev_hash: str, seq: int, ts: float, kind: str, payload_json: str) -> str:
    material = f"{prev_hash}|{seq}|{ts!r}|{kind}|{payload_json}".encode()
    return hashlib.sha256(material).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    ts: float
    kind: str
    payload: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None
    reason: str


def verify(entries: Iterable[AuditEntry]) -> VerifyResult:
    """Walk the chain from the start; report the first entry whose link or hash does not hold."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    for e in entries:
        count += 1
        if e.seq != expected_seq:
            return VerifyResult(False, count, e.seq, f"sequence gap: expected {expected_seq}, found {e.seq}")
        if e.prev_hash != prev:
            return VerifyResult(False, count, e.seq, "prev_hash does not match the previous entry")
        if entry_hash(e.prev_hash, e.seq, e.ts, e.kind, e.payload) != e.hash:
            return VerifyResult(False, count, e.seq, "hash does not match the entry's content")
        try:
            json.loads(e.payload)
        except ValueError:
            return VerifyResult(False, count, e.seq, "payload is not JSON")
        prev = e.hash
        expected_seq += 1
    return VerifyResult(True, count, None, "ok")
