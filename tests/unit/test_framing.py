"""Newline framing with a size cap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.stratum.protocol import LineFramer, LineTooLong


def test_line_split_across_chunks() -> None:
    f = LineFramer()
    assert f.feed(b'{"id":1,') == []
    assert f.pending == 8
    assert f.feed(b'"method":"x"}') == []
    assert f.feed(b"\n") == [b'{"id":1,"method":"x"}']
    assert f.pending == 0


def test_multiple_lines_in_one_chunk_and_remainder() -> None:
    f = LineFramer()
    assert f.feed(b"a\nbb\nccc\ndd") == [b"a", b"bb", b"ccc"]
    assert f.pending == 2
    assert f.feed(b"d\n") == [b"ddd"]


def test_crlf_and_blank_lines() -> None:
    f = LineFramer()
    assert f.feed(b"one\r\n\r\n\n  \r\ntwo\r") == [b"one"]
    assert f.feed(b"\n") == [b"two"]
    assert f.feed(b"\n\n\n") == []


def test_byte_at_a_time() -> None:
    f = LineFramer()
    out: list[bytes] = []
    for b in b"abc\r\ndef\n":
        out += f.feed(bytes([b]))
    assert out == [b"abc", b"def"]


def test_line_at_cap_is_fine() -> None:
    f = LineFramer(max_line=100)
    assert f.feed(b"x" * 100) == []
    assert f.feed(b"\n") == [b"x" * 100]
    assert f.feed(b"y" * 100 + b"\n") == [b"y" * 100]


def test_cap_exceeded_without_newline() -> None:
    f = LineFramer(max_line=100)
    f.feed(b"x" * 60)
    with pytest.raises(LineTooLong):
        f.feed(b"x" * 41)
    assert f.pending == 0


def test_cap_exceeded_in_one_chunk_without_newline() -> None:
    f = LineFramer(max_line=100)
    with pytest.raises(LineTooLong):
        f.feed(b"x" * 101)


def test_cap_exceeded_with_newline() -> None:
    f = LineFramer(max_line=100)
    with pytest.raises(LineTooLong):
        f.feed(b"ok\n" + b"x" * 101 + b"\nmore\n")
    f2 = LineFramer(max_line=100)
    f2.feed(b"x" * 90)
    with pytest.raises(LineTooLong):
        f2.feed(b"x" * 20 + b"\n")


def test_cap_exceeded_by_remainder_after_newline() -> None:
    f = LineFramer(max_line=100)
    with pytest.raises(LineTooLong):
        f.feed(b"short\n" + b"x" * 101)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
)
def test_rechunking_preserves_lines(lines: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    f = LineFramer(max_line=1000)
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += f.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert out == [line.strip() for line in lines if line.strip()]
