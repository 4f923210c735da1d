"""Found blocks' ledger rows, journaled on disk until the ledger has them.

A block's row carries its credits. If the ledger cannot take it (the writer died, the database is locked) and
the pool is restarted meanwhile, the row would be lost and the miners never credited: so the row is first
written here (fsynced, one small JSON file per block), removed once the ledger committed it, and replayed
into the ledger at the next start. Recording a block is idempotent, so a replay of a row that did land is
harmless.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from pool.ledger.sqlite import BlockRecord

SUFFIX = ".block-row.json"


def _path(directory: Path, block_hash: str) -> Path:
    return directory / f"{block_hash}{SUFFIX}"


def write(directory: Path, record: BlockRecord) -> Path:
    """Journal ``record`` durably (file and directory fsynced) before the ledger is asked for it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = _path(directory, record.block_hash)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        json.dump(dataclasses.asdict(record), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def remove(directory: Path, block_hash: str) -> None:
    """The ledger has the row: its journal entry is done."""
    _path(directory, block_hash).unlink(missing_ok=True)


def pending(directory: Path) -> list[BlockRecord]:
    """Rows journaled and not known to be in the ledger, oldest first. An unreadable entry is skipped (the
    caller logs it) rather than stopping the start-up: the block file beside it keeps the block itself."""
    if not directory.is_dir():
        return []
    records = []
    fields = {f.name for f in dataclasses.fields(BlockRecord)}
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            data = json.loads(path.read_text())
            records.append(BlockRecord(**{k: v for k, v in data.items() if k in fields}))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(records, key=lambda r: r.found_at)
