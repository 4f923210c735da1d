"""Extranonce1 allocation: unique among live connections, released values reusable, claims for resume."""

from __future__ import annotations

import pytest

from pool.mining.extranonce import ExtranonceAllocator


def test_many_allocations_are_unique_and_sized() -> None:
    alloc = ExtranonceAllocator(4)
    values = [alloc.allocate() for _ in range(20_000)]
    assert len(set(values)) == len(values)
    assert all(len(v) == 4 for v in values)
    assert len(alloc) == 20_000


def test_whole_space_then_exhausted() -> None:
    alloc = ExtranonceAllocator(2)
    values = {alloc.allocate() for _ in range(65536)}
    assert len(values) == 65536
    with pytest.raises(RuntimeError):
        alloc.allocate()
    some = sorted(values)[1234]
    alloc.release(some)
    assert alloc.allocate() == some


def test_release_and_reuse_never_duplicates_live_values() -> None:
    alloc = ExtranonceAllocator(2)
    live = [alloc.allocate() for _ in range(1000)]
    for v in live[::2]:
        alloc.release(v)
    assert len(alloc) == 500
    kept = set(live[1::2])
    fresh = [alloc.allocate() for _ in range(60_000)]
    assert len(set(fresh)) == len(fresh)
    assert not kept & set(fresh)
    # Released values are not handed out again at once.
    assert not set(fresh[:100]) & set(live[::2])


def test_release_of_unknown_value_is_harmless() -> None:
    alloc = ExtranonceAllocator(4)
    alloc.release(b"\x00\x00\x00\x01")
    assert len(alloc) == 0


def test_claim() -> None:
    alloc = ExtranonceAllocator(4)
    wanted = bytes.fromhex("cafebabe")
    assert alloc.claim(wanted) is True
    assert alloc.claim(wanted) is False  # in use
    assert alloc.claim(b"\x01\x02\x03") is False  # wrong size
    assert alloc.claim(b"\x01\x02\x03\x04\x05") is False
    assert len(alloc) == 1
    alloc.release(wanted)
    assert alloc.claim(wanted) is True


def test_allocate_skips_claimed_values() -> None:
    alloc = ExtranonceAllocator(2)
    first = alloc.allocate()
    nxt = ((int.from_bytes(first, "big") + 1) % 65536).to_bytes(2, "big")
    assert alloc.claim(nxt)
    second = alloc.allocate()
    assert second not in (first, nxt)
    assert int.from_bytes(second, "big") == (int.from_bytes(first, "big") + 2) % 65536


def test_allocated_value_cannot_be_claimed() -> None:
    alloc = ExtranonceAllocator(8)
    v = alloc.allocate()
    assert len(v) == 8
    assert alloc.claim(v) is False


@pytest.mark.parametrize("size", [0, 1, 9, 16])
def test_size_bounds(size: int) -> None:
    with pytest.raises(ValueError):
        ExtranonceAllocator(size)


def test_random_start_differs_between_instances() -> None:
    starts = {ExtranonceAllocator(8).allocate() for _ in range(20)}
    assert len(starts) > 1


def test_prefixes_keep_processes_and_nodes_apart() -> None:
    """[node id][process][counter]: allocators with different prefixes never hand out the same value."""
    from pool.mining.extranonce import extranonce_prefix

    seen: set[bytes] = set()
    for node in (0, 1, 255):
        for process in range(4):
            prefix, bits = extranonce_prefix(node, 8, process, 2)
            alloc = ExtranonceAllocator(3, prefix, bits)  # 14 counter bits: small enough to walk it all
            values = {alloc.allocate() for _ in range(1 << 14)}
            assert len(values) == 1 << 14 and not values & seen
            assert all(alloc.owns(v) and alloc.prefix_of(v, 8) == node for v in values)
            with pytest.raises(RuntimeError):
                alloc.allocate()
            seen |= values
    other = ExtranonceAllocator(3, *extranonce_prefix(0, 8, 1, 2))
    assert not other.owns(next(iter(ExtranonceAllocator(3, *extranonce_prefix(0, 8, 2, 2)).allocate() for _ in [0])))
    with pytest.raises(ValueError):
        extranonce_prefix(256, 8, 0, 0)
    with pytest.raises(ValueError):
        extranonce_prefix(0, 8, 4, 2)


def test_a_value_from_another_process_can_be_claimed_for_resume() -> None:
    from pool.mining.extranonce import extranonce_prefix

    mine = ExtranonceAllocator(4, *extranonce_prefix(0, 8, 0, 1))
    theirs = ExtranonceAllocator(4, *extranonce_prefix(0, 8, 1, 1)).allocate()
    assert not mine.owns(theirs)
    assert mine.claim(theirs) and not mine.claim(theirs)
    mine.release(theirs)
    assert mine.claim(theirs)
