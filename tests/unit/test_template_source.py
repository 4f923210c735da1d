"""The template source parses and prepares templates off the event loop (a stand-in node: pure logic)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pool.mining.jobs import BlockTemplate
from pool.node import work
from pool.node.work import TemplateSource
from tests.unit.helpers import make_gbt


class FixedNode:
    async def get_template(self) -> Any:
        return make_gbt(n_txs=20)


async def test_templates_are_parsed_and_prepared_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing a mainnet template and computing its merkle branch and witness commitment take milliseconds:
    done on the loop, they would delay every miner's answer at each new tip."""
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real_prepare = work.prepare

    def recording_prepare(gbt: object) -> Any:
        threads.append(threading.get_ident())
        return real_prepare(gbt)

    monkeypatch.setattr(work, "prepare", recording_prepare)
    delivered: list[tuple[BlockTemplate, bool, str]] = []
    source = TemplateSource(FixedNode(), lambda t, new_tip, reason: delivered.append((t, new_tip, reason)),  # type: ignore[arg-type]
                            longpoll=False)
    assert await source.fetch("start")
    assert threads and loop_thread not in threads
    template, new_tip, reason = delivered[0]
    assert new_tip and reason == "start" and len(template.transactions) == 20
    assert source.prepared is not None and source.prepared.template is template  # the coordinator reuses it
