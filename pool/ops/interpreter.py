"""Interpreter settings for a process that answers miners: GIL switching and the cyclic garbage collector.

Why the collector: CPython starts a young collection every 700 net allocations of container objects. Every
accepted share keeps a handful of them alive until its commit (the reply slot, the ledger record, the commit's
callback), so with a thousand shares in flight nearly every young collection finds survivors and promotes them;
promoted objects soon start a full collection, which walks every tracked object of the process. Measured
with 1,000 miners at ~12,000 accepted shares/s: a full collection every 100-400 ms, each 45-70 ms with the
event loop and the ledger writer stopped (it collected nothing), plus 2-4 ms young collections many times a
second: the p99 reply latency of those windows was the collector's.

Here the young threshold is raised, so objects that live a few milliseconds die of their reference count
before any collection sees them, and the start-up heap (modules, classes, configuration: ~60,000 objects) is
frozen out of every later full collection. Cyclic garbage is still collected, after at most ``YOUNG`` net
allocations (a few megabytes).
"""

from __future__ import annotations

import gc
import sys

SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the GIL while another waits (Python's default: 0.005)
YOUNG = 100_000  # net container allocations between young collections (Python's default: 700)
OLDER = (20, 20)  # young collections per middle one, middle collections per full one (default: 10, 10)


def tune() -> None:
    """At process start, before the event loop runs.

    The switch interval: worker threads (template decoding, the ledger writer) hold the GIL for up to the
    switch interval each time the event loop releases it for a syscall; at the default 5 ms a template
    arriving stalls the loop that answers miners for tens of milliseconds.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.set_threshold(YOUNG, *OLDER)


def started() -> None:
    """Once the process has started (everything imported, configuration read, listeners open): what exists
    now lives as long as the process, so full collections need not walk it again."""
    gc.collect()
    gc.freeze()
