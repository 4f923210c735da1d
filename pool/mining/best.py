"""Best share difficulty per worker, per block round and all time: what miners watch for luck.

Pure and cheap on the share path: one dict lookup and a comparison per accepted share. A share that beats
its worker's record (rare: a handful per worker per round, growing with the logarithm of the share count)
returns the new record for the caller to persist; the ledger keeps the larger value on conflict, so a worker
forgotten here (past ``max_workers``) costs one extra write, never a wrong record.

A *round* is the time since the pool's last found block; its number is the count of blocks found so far, so
it survives restarts with the ledger. A worker's round best counts only while its ``round_no`` is current:
at a new round every round best becomes zero without touching any row.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class Record:
    """One worker's records (``round_best`` belongs to round ``round_no``)."""

    address: str
    worker: str
    best: float = 0.0
    best_at: float = 0.0
    round_no: int = 0
    round_best: float = 0.0
    round_best_at: float = 0.0

    def row(self) -> tuple[str, str, float, float, int, float, float]:
        return (self.address, self.worker, self.best, self.best_at, self.round_no, self.round_best,
                self.round_best_at)


@dataclass(frozen=True, slots=True)
class PoolBest:
    """The pool's highest share in some scope and who found it."""

    difficulty: float
    address: str
    worker: str
    at: float

    def as_dict(self) -> dict[str, object]:
        return {"difficulty": self.difficulty, "address": self.address, "worker": self.worker, "at": self.at}


class BestShares:
    """Records per worker, and the pool's round and all-time bests."""

    def __init__(self, max_workers: int = 100_000) -> None:
        self.max_workers = max_workers
        self.round_no = 0
        self.workers: OrderedDict[tuple[str, str], Record] = OrderedDict()
        self.pool_all_time: PoolBest | None = None
        self.pool_round: PoolBest | None = None

    def load(self, rows: list[tuple[str, str, float, float, int, float, float]], round_no: int) -> None:
        """Start from the ledger's rows (address, worker, best, best_at, round_no, round_best, round_best_at)."""
        self.round_no = round_no
        self.workers.clear()
        self.pool_all_time = self.pool_round = None
        for address, worker, best, best_at, row_round, round_best, round_best_at in rows:
            record = Record(address, worker, float(best), float(best_at), int(row_round), float(round_best),
                            float(round_best_at))
            self._remember((address, worker), record)
            self._raise_pool(record)

    def offer(self, address: str, worker: str, difficulty: float, now: float) -> Record | None:
        """An accepted share's difficulty (of its hash). Returns the worker's record if this share raised it."""
        key = (address, worker)
        record = self.workers.get(key)
        if record is None:
            record = Record(address, worker, round_no=self.round_no)
            self._remember(key, record)
        else:
            self.workers.move_to_end(key)
        if record.round_no != self.round_no:
            record.round_no, record.round_best, record.round_best_at = self.round_no, 0.0, 0.0
        if difficulty <= record.round_best and difficulty <= record.best:
            return None
        if difficulty > record.round_best:
            record.round_best, record.round_best_at = difficulty, now
        if difficulty > record.best:
            record.best, record.best_at = difficulty, now
        self._raise_pool(record)
        return Record(*record.row())  # a copy: the ledger writer thread must not see later changes

    def new_round(self) -> None:
        """The pool found a block: every round best starts again from zero."""
        self.round_no += 1
        self.pool_round = None

    def for_worker(self, address: str, worker: str) -> Record | None:
        return self.workers.get((address, worker))

    def _remember(self, key: tuple[str, str], record: Record) -> None:
        self.workers[key] = record
        while len(self.workers) > self.max_workers:
            self.workers.popitem(last=False)

    def _raise_pool(self, record: Record) -> None:
        if record.best > 0 and (self.pool_all_time is None or record.best > self.pool_all_time.difficulty):
            self.pool_all_time = PoolBest(record.best, record.address, record.worker, record.best_at)
        if record.round_no == self.round_no and record.round_best > 0 and (
            self.pool_round is None or record.round_best > self.pool_round.difficulty
        ):
            self.pool_round = PoolBest(record.round_best, record.address, record.worker, record.round_best_at)
