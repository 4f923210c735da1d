"""Each log record reaches stderr in one write: several processes (Stratum front-ends) share the stream."""

from __future__ import annotations

import io
import json
import sys

import pytest
import structlog

from pool.ops.telemetry import configure_logging


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_a_record_and_its_newline_are_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes writing to one stderr interleave between write calls: with the newline written apart from the
    record, two front-ends' records once landed on a single line that no JSON reader could parse."""
    stream = CountingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("info", "json")
    try:
        structlog.get_logger("t").info("stratum_listening", port=3333)
        structlog.get_logger("t").warning("second", n=2)
    finally:
        structlog.reset_defaults()
    assert len(stream.writes) == 2 and all(w.endswith("\n") and w.count("\n") == 1 for w in stream.writes)
    assert [json.loads(w)["event"] for w in stream.writes] == ["stratum_listening", "second"]
