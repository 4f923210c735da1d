"""A minimal pool node for the leader tests: ``python -m tests.support.leader_runner URL NAME``.

It holds (or waits for) the ledger's leader lock the way ``pool run`` does (``Leadership`` + ``gated``) and,
while leading, appends a ``leader_tick`` audit entry naming itself every 50 ms: the audit log then shows who
ran the leader's work, and when.
"""

from __future__ import annotations

import asyncio
import sys

from pool.ledger import book
from pool.ledger.leader import Leadership, lock_for
from pool.ledger.pg import PgTarget
from pool.ledger.sqlite import Ledger


async def main(url: str, name: str) -> None:
    ledger = Ledger(url, rollup_interval=0)
    leadership = Leadership(lock_for(PgTarget(url)), retry=0.2, check=0.2)

    async def work() -> None:
        while True:
            await asyncio.to_thread(ledger.run_sync, lambda c: book.audit(c, "leader_tick", {"node": name}))
            await asyncio.sleep(0.05)

    print("ready", flush=True)
    await asyncio.gather(leadership.run(), leadership.gated(work)())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
