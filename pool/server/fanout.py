"""New work sent to every miner in time slices, so shares keep being answered while it goes out.

Writing one ``mining.notify`` line costs a send system call per connection (8-15 µs on a small VM): one pass over
1,000 miners holds the event loop for 15-25 ms, and every share that arrives meanwhile waits that long for its
answer (the p99 reply latency under load doubled at each new tip). A fan-out instead sends for at most
``budget`` seconds, then lets the loop run (answering shares, reading sockets) and goes on with the next slice.
The first slice is sent at once, so the first miners still hear of a new tip without delay.

A fan-out that starts while another is still under way replaces it: the sessions the old one had not reached
are in the new snapshot too, and any that were owed a clean job (a new tip) still get ``clean_jobs = true``, so
a non-clean update following a new tip can never leave a miner working on the old block. Callers learn when
their work has reached everyone (``done``), which the new-tip latency metric records.

Pure scheduling: the caller supplies how to send to one session and how to run a callback soon; nothing here
knows sockets or the event loop, so tests drive it with a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

S = TypeVar("S", bound=Hashable)  # sessions compare by identity

DEFAULT_BUDGET = 0.001  # seconds of sending per slice before the loop gets to answer shares again
_CHECK_EVERY = 16  # sessions between clock reads (a read costs about as much as a quarter of one send)


class Fanout(Generic[S]):
    """At most one fan-out in progress; ``start`` replaces the one under way (see the module docstring)."""

    __slots__ = ("_send", "_schedule", "_clock", "budget", "_queue", "_pos", "_sent", "_waiting", "_scheduled")

    def __init__(self, send: Callable[[S, bool], bool], schedule: Callable[[Callable[[], None]], object],
                 budget: float = DEFAULT_BUDGET, clock: Callable[[], float] = time.perf_counter) -> None:
        self._send = send  # sends one session its work; False when it got none (closing, paused, no work yet)
        self._schedule = schedule  # runs a callback after the loop has handled pending I/O (loop.call_soon)
        self._clock = clock
        self.budget = budget
        self._queue: list[tuple[S, bool]] = []
        self._pos = 0
        self._sent = 0
        self._waiting: list[Callable[[int], None]] = []
        self._scheduled = False

    @property
    def in_progress(self) -> bool:
        return self._pos < len(self._queue)

    def start(self, sessions: Iterable[S], clean: bool, done: Callable[[int], None] | None = None) -> None:
        """Send work to ``sessions`` (a snapshot); ``done(sent)`` runs once the last of them has it."""
        owed = {s for s, c in self._queue[self._pos:] if c}  # the replaced fan-out's clean jobs not yet sent
        if owed:
            self._queue = [(s, clean or s in owed) for s in sessions]
        else:
            self._queue = [(s, clean) for s in sessions]
        self._pos = 0
        self._sent = 0
        if done is not None:
            self._waiting.append(done)
        self._step()

    def _resume(self) -> None:
        self._scheduled = False
        self._step()

    def _step(self) -> None:
        queue, send, clock = self._queue, self._send, self._clock
        end = len(queue)
        pos = self._pos
        deadline = clock() + self.budget
        while pos < end:
            session, clean = queue[pos]
            pos += 1
            if send(session, clean):
                self._sent += 1
            if pos % _CHECK_EVERY == 0 and pos < end and clock() >= deadline:
                break
        self._pos = pos
        if pos < end:
            if not self._scheduled:
                self._scheduled = True
                self._schedule(self._resume)
            return
        self._queue = []
        self._pos = 0
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback(self._sent)
