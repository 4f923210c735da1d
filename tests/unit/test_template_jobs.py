"""getblocktemplate parsing, per-template preparation, notify encodings, the job book and block assembly."""

from __future__ import annotations

import pickle
import struct
from typing import Any

import pytest

from pool.bitcoin.coinbase import TxOut
from pool.mining.jobs import (
    JobBook,
    Lookup,
    PreparedTemplate,
    TemplateError,
    TemplateTx,
    be32,
    make_job,
    parse_template,
    stratum_prevhash,
)
from tests.unit.helpers import (
    P2WPKH_SCRIPT,
    PREVHASH_DISPLAY,
    ZERO32,
    build_job,
    dsha,
    header_from_notify,
    make_gbt,
    parse_block,
    parse_whole_tx,
    ref_merkle_root,
    ref_witness_commitment_script,
)

EN1 = bytes.fromhex("01020304")
EN2 = bytes.fromhex("0000000000000001")


def _internal(display_hex: str) -> bytes:
    return bytes.fromhex(display_hex)[::-1]


# ---- parse_template -------------------------------------------------------------------------------------


def test_parse_template_fields() -> None:
    gbt = make_gbt(n_txs=4)
    t = parse_template(gbt)
    assert t.height == 500_000
    assert t.version == 0x20000000
    assert t.prevhash == _internal(PREVHASH_DISPLAY)
    assert t.prevhash_hex == PREVHASH_DISPLAY
    assert t.bits == 0x207FFFFF
    assert t.network_target == 0x7FFFFF << (8 * 29)
    assert t.curtime == gbt["curtime"] and t.mintime == gbt["mintime"]
    assert t.coinbase_value == gbt["coinbasevalue"]
    assert t.longpollid == gbt["longpollid"]
    assert "!segwit" in t.rules
    assert t.default_witness_commitment == bytes.fromhex(gbt["default_witness_commitment"])
    assert len(t.transactions) == 4
    for tx, raw in zip(t.transactions, gbt["transactions"], strict=True):
        assert tx.data.hex() == raw["data"]
        assert tx.txid == _internal(raw["txid"])
        assert tx.wtxid == _internal(raw["hash"])
        assert tx.fee == raw["fee"] and tx.weight == raw["weight"]
        parsed = parse_whole_tx(tx.data)
        assert tx.txid == parsed.txid and tx.wtxid == parsed.wtxid
    # Segwit transactions have a wtxid different from their txid; legacy ones do not.
    assert t.transactions[0].wtxid != t.transactions[0].txid
    assert t.transactions[1].wtxid == t.transactions[1].txid
    assert t.total_fees == sum(raw["fee"] for raw in gbt["transactions"])


def test_parse_template_without_hash_uses_txid() -> None:
    gbt = make_gbt(n_txs=1)
    del gbt["transactions"][0]["hash"]
    t = parse_template(gbt)
    assert t.transactions[0].wtxid == t.transactions[0].txid


@pytest.mark.parametrize(
    "mutate",
    [
        lambda g: g.pop("height"),
        lambda g: g.pop("previousblockhash"),
        lambda g: g.pop("coinbasevalue"),
        lambda g: g.update(bits="zz"),
        lambda g: g.update(previousblockhash="xyz"),
        lambda g: g["transactions"][0].update(data="0g"),
        lambda g: g["transactions"][0].pop("txid"),
        lambda g: g.update(transactions=None),
        lambda g: g.update(default_witness_commitment="not hex"),
    ],
)
def test_parse_template_errors(mutate: Any) -> None:
    gbt = make_gbt(n_txs=2)
    mutate(gbt)
    with pytest.raises(TemplateError):
        parse_template(gbt)


@pytest.mark.parametrize("field", ["previousblockhash", "txid", "hash"])
def test_parse_template_rejects_short_hashes(field: str) -> None:
    gbt = make_gbt(n_txs=2)
    if field == "previousblockhash":
        gbt[field] = "00" * 31
    else:
        gbt["transactions"][0][field] = "00" * 31
    with pytest.raises(TemplateError):
        parse_template(gbt)


# ---- PreparedTemplate -----------------------------------------------------------------------------------


def test_prepared_template_branch_and_commitment() -> None:
    gbt = make_gbt(n_txs=5)
    t = parse_template(gbt)
    p = PreparedTemplate.from_template(t)
    assert p.commitment_script == bytes.fromhex(gbt["default_witness_commitment"])
    assert p.commitment_script == ref_witness_commitment_script([tx.wtxid for tx in t.transactions])
    assert p.branch_bytes == b"".join(p.branch)
    assert p.network_target == t.network_target
    assert p.network_target_le == t.network_target.to_bytes(32, "little")
    # Folding any coinbase txid with the branch gives the merkle root of the whole block.
    cb = dsha(b"any coinbase")
    node = cb
    for h in p.branch:
        node = dsha(node + h)
    assert node == ref_merkle_root([cb, *(tx.txid for tx in t.transactions)])


def test_prepared_template_survives_pickling_for_front_ends() -> None:
    """Front-end processes receive templates pickled (with the transactions as plain tuples): what arrives
    must be equal field for field, transaction objects included, and build the same block."""
    t = parse_template(make_gbt(n_txs=7))
    p = PreparedTemplate.from_template(t)
    back = pickle.loads(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == p
    assert back.template == t and back.template.total_fees == t.total_fees
    assert all(isinstance(tx, TemplateTx) for tx in back.template.transactions)


def test_wrong_default_witness_commitment_is_refused() -> None:
    gbt = make_gbt(n_txs=3)
    good = bytes.fromhex(gbt["default_witness_commitment"])
    gbt["default_witness_commitment"] = (good[:-1] + bytes([good[-1] ^ 1])).hex()
    with pytest.raises(TemplateError, match="witness commitment"):
        PreparedTemplate.from_template(parse_template(gbt))


def test_commitment_mismatch_when_wtxid_is_wrong() -> None:
    gbt = make_gbt(n_txs=3)
    gbt["transactions"][0]["hash"] = gbt["transactions"][0]["txid"]  # bitcoind would never say this
    with pytest.raises(TemplateError):
        PreparedTemplate.from_template(parse_template(gbt))


def test_segwit_rule_without_default_commitment_still_commits() -> None:
    gbt = make_gbt(n_txs=2)
    del gbt["default_witness_commitment"]
    p = PreparedTemplate.from_template(parse_template(gbt))
    wtxids = [_internal(tx["hash"]) for tx in gbt["transactions"]]
    assert p.commitment_script == ref_witness_commitment_script(wtxids)


def test_plain_segwit_rule_without_default_commitment_commits() -> None:
    gbt = make_gbt(n_txs=2)
    del gbt["default_witness_commitment"]
    gbt["rules"] = ["csv", "segwit"]
    p = PreparedTemplate.from_template(parse_template(gbt))
    wtxids = [_internal(tx["hash"]) for tx in gbt["transactions"]]
    assert p.commitment_script == ref_witness_commitment_script(wtxids)


def test_no_segwit_no_commitment() -> None:
    p = PreparedTemplate.from_template(parse_template(make_gbt(n_txs=2, segwit=False)))
    assert p.commitment_script is None


def test_empty_template_has_empty_branch() -> None:
    p = PreparedTemplate.from_template(parse_template(make_gbt(n_txs=0)))
    assert p.branch == ()
    assert p.commitment_script == ref_witness_commitment_script([])


# ---- notify encodings -----------------------------------------------------------------------------------


def test_stratum_prevhash_word_swap() -> None:
    internal = _internal(PREVHASH_DISPLAY)
    # Each 4-byte word of the internal order byte-swapped == the display hex's 8-digit groups in reverse order.
    groups = [PREVHASH_DISPLAY[i : i + 8] for i in range(0, 64, 8)]
    assert stratum_prevhash(internal) == "".join(reversed(groups))
    assert stratum_prevhash(bytes(range(32)))[:16] == "0302010007060504"


def test_be32() -> None:
    assert be32(0x20000000) == "20000000"
    assert be32(0x207FFFFF) == "207fffff"
    assert be32(1) == "00000001"
    assert be32(-1) == "ffffffff"


def test_notify_params_exact_encodings() -> None:
    gbt = make_gbt(n_txs=3, bits="1d00ffff", version=0x20000004)
    job = build_job(gbt, job_id="abc")
    params = job.notify_params(True)
    assert len(params) == 9
    job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, clean = params
    assert job_id == "abc"
    groups = [PREVHASH_DISPLAY[i : i + 8] for i in range(0, 64, 8)]
    assert prevhash == "".join(reversed(groups))
    assert coinb1 == job.coinbase.coinb1.hex() and coinb2 == job.coinbase.coinb2.hex()
    txids = [_internal(tx["txid"]) for tx in gbt["transactions"]]
    # Branch in internal order: level-0 sibling is the first txid as is (not its display form).
    assert branch[0] == txids[0].hex()
    assert branch[1] == dsha(txids[1] + txids[2]).hex()
    assert version == "20000004"
    assert nbits == "1d00ffff"
    assert ntime == f"{gbt['curtime']:08x}"
    assert clean is True
    assert job.notify_params(False)[-1] is False


def test_header_from_notify_commits_to_template() -> None:
    gbt = make_gbt(n_txs=4)
    job = build_job(gbt)
    header = header_from_notify(job.notify_params(True), EN1, EN2, job.ntime, 7)
    assert header[:4] == struct.pack("<I", gbt["version"])
    assert header[4:36] == _internal(gbt["previousblockhash"])
    coinbase_txid = dsha(job.coinbase.assemble(EN1, EN2))
    txids = [_internal(tx["txid"]) for tx in gbt["transactions"]]
    assert header[36:68] == ref_merkle_root([coinbase_txid, *txids])
    assert header[68:80] == struct.pack("<III", job.ntime, 0x207FFFFF, 7)


def test_make_job_ntime_never_before_mintime() -> None:
    job = build_job(make_gbt(curtime=1000, mintime=2000))
    assert job.ntime == 2000
    job = build_job(make_gbt(curtime=3000, mintime=2000))
    assert job.ntime == 3000


def test_make_job_coinbase_pays_outputs_and_commitment() -> None:
    gbt = make_gbt(n_txs=2)
    outs = [TxOut(100, P2WPKH_SCRIPT), TxOut(gbt["coinbasevalue"] - 100, bytes.fromhex("5120") + ZERO32)]
    job = build_job(gbt, outputs=outs)
    tx = parse_whole_tx(job.coinbase.assemble(EN1, EN2))
    assert tx.outputs == [(100, P2WPKH_SCRIPT), (outs[1].value, outs[1].script), (0, bytes.fromhex(gbt["default_witness_commitment"]))]
    assert tx.inputs[0][2][:4] == bytes.fromhex("0320a107")


def test_solo_coinbase_fits_nerdminer_buffer() -> None:
    """NerdMiner keeps the whole coinbase in 512 hex chars: a SOLO coinbase (P2TR finder + P2WPKH fee output +
    witness commitment) at a mainnet height with the default tag and 4+8 extranonce bytes must fit."""
    gbt = make_gbt(n_txs=3, height=900_000)
    outs = [TxOut(gbt["coinbasevalue"] - 1000, bytes.fromhex("5120") + b"\x11" * 32), TxOut(1000, P2WPKH_SCRIPT)]
    job = build_job(gbt, outputs=outs, pool_tag=b"/pool/", en_total=12)
    coinb1, coinb2 = job.notify_params(True)[2:4]
    assert len(coinb1) + 2 * 12 + len(coinb2) <= 512


# ---- block assembly -------------------------------------------------------------------------------------


def test_block_bytes_layout() -> None:
    gbt = make_gbt(n_txs=5)
    job = build_job(gbt)
    header = header_from_notify(job.notify_params(True), EN1, EN2, job.ntime, 12345)
    raw = job.block_bytes(header, EN1, EN2)
    block = parse_block(raw)
    assert block.header == header
    assert len(block.txs) == 6
    coinbase = block.txs[0]
    assert coinbase.segwit and coinbase.witnesses == [[ZERO32]]
    assert coinbase.legacy == job.coinbase.assemble(EN1, EN2)
    for tx, raw_tx in zip(block.txs[1:], gbt["transactions"], strict=True):
        assert tx.raw.hex() == raw_tx["data"]
    # The header's merkle root is the root of the block's txids; the commitment covers its wtxids.
    assert block.merkle_root == ref_merkle_root([tx.txid for tx in block.txs])
    commitment = coinbase.outputs[-1][1]
    assert commitment == ref_witness_commitment_script([tx.wtxid for tx in block.txs[1:]])


def test_block_bytes_without_segwit_uses_legacy_coinbase() -> None:
    job = build_job(make_gbt(n_txs=1, segwit=False))
    header = header_from_notify(job.notify_params(True), EN1, EN2, job.ntime, 0)
    block = parse_block(job.block_bytes(header, EN1, EN2))
    assert not block.txs[0].segwit
    assert block.txs[0].raw == job.coinbase.assemble(EN1, EN2)


def test_block_bytes_large_tx_count_uses_compact_size() -> None:
    job = build_job(make_gbt(n_txs=260))
    header = header_from_notify(job.notify_params(True), EN1, EN2, job.ntime, 0)
    raw = job.block_bytes(header, EN1, EN2)
    assert raw[80:83] == b"\xfd" + (261).to_bytes(2, "little")
    assert len(parse_block(raw).txs) == 261


# ---- JobBook --------------------------------------------------------------------------------------------


def _job_on_tip(job_id: str, prevhash: str) -> Any:
    return build_job(make_gbt(n_txs=1, prevhash=prevhash), job_id=job_id)


TIP_A = "11" * 32
TIP_B = "22" * 32


def test_jobbook_lookup_and_new_tip() -> None:
    book = JobBook()
    j1, j2 = _job_on_tip("1", TIP_A), _job_on_tip("2", TIP_A)
    assert book.add(j1) is True  # first job moves the book to its tip
    assert book.add(j2) is False
    assert book.get("1") is j1 and book.get("2") is j2
    assert len(book) == 2
    j3 = _job_on_tip("3", TIP_B)
    assert book.add(j3) is True
    assert book.get("1") is Lookup.STALE and book.get("2") is Lookup.STALE
    assert book.get("3") is j3
    assert book.get("never") is Lookup.UNKNOWN
    assert len(book) == 1
    assert book.tip == _internal(TIP_B)


def test_jobbook_ids_are_unique() -> None:
    book = JobBook()
    ids = {book.next_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i and all(c in "0123456789abcdef" for c in i) for i in ids)


def _generation(tag: str, count: int, tip: str = TIP_A) -> list[Any]:
    """``count`` jobs (payout variants) of one new template on ``tip``."""
    prepared = _job_on_tip(f"{tag}-base", tip).prepared
    return [make_job(f"{tag}-{i}", prepared, [TxOut(1, P2WPKH_SCRIPT)], b"", 12, 0.0) for i in range(count)]


def test_jobbook_job_cap_evicts_whole_older_generations() -> None:
    book = JobBook(max_jobs=4, max_stale=100)
    old, new = _generation("old", 3), _generation("new", 3)
    for job in old + new:
        book.add(job)
    assert len(book) == 3
    assert all(book.get(job.job_id) is job for job in new)
    # The evicted generation is remembered as stale, not unknown.
    assert all(book.get(job.job_id) is Lookup.STALE for job in old)


def test_jobbook_never_evicts_the_current_generation() -> None:
    """Every miner works on a job of the newest template: the safety cap must not take those away, however
    many jobs that template has (a flood of payout variants or anything else)."""
    book = JobBook(max_jobs=5, max_stale=100)
    current = _generation("cur", 50)
    for job in current:
        book.add(job)
    assert all(book.get(job.job_id) is job for job in current)


def test_jobbook_bounded_stale_memory() -> None:
    book = JobBook(max_templates=1, max_stale=3)
    jobs = [_generation(f"g{i}", 1)[0] for i in range(10)]
    for job in jobs:
        book.add(job)
    assert len(book._stale) == 3  # the bound itself is the behaviour under test
    assert [book.get(job.job_id) for job in jobs[6:9]] == [Lookup.STALE] * 3
    assert [book.get(job.job_id) for job in jobs[:6]] == [Lookup.UNKNOWN] * 6


def test_jobbook_keeps_previous_tip_jobs_for_late_blocks_only() -> None:
    book = JobBook()
    a, b, c = _job_on_tip("a", TIP_A), _job_on_tip("b", TIP_B), _job_on_tip("c", "33" * 32)
    book.add(a)
    book.add(b)
    assert book.get("a") is Lookup.STALE and book.stale_job("a") is a
    book.add(c)
    assert book.get("a") is Lookup.STALE and book.stale_job("a") is None  # two tips back: id only
    assert book.stale_job("b") is b


def test_jobbook_duplicates_span_every_live_job_of_the_same_work() -> None:
    book = JobBook()
    a = _job_on_tip("a", TIP_A)
    renewal = _job_on_tip("a2", TIP_A)  # the same template again: another job id, byte-identical work
    other = build_job(make_gbt(n_txs=2, prevhash=TIP_A), job_id="b")  # different transactions: other work
    for job in (a, renewal, other):
        book.add(job)
    assert renewal.work == a.work != other.work
    assert book.claim(a, b"h" * 32) is True
    assert book.claim(renewal, b"h" * 32) is False  # one solution, one credit, whichever id it comes under
    assert book.claim(other, b"h" * 32) is True  # other work cannot make this header: its own record
    book.release(renewal, b"h" * 32)
    assert book.claim(a, b"h" * 32) is True  # a failed write un-claims it for the resubmission
    book.add(_job_on_tip("c", TIP_B))
    assert book.claimed == 0  # a new tip starts afresh
    assert book.claim(a, b"h" * 32) is True


def test_jobbook_duplicate_memory_follows_the_live_jobs_not_the_tips_age() -> None:
    """Solutions are remembered per piece of work and dropped with its last live job: a tip that lasts long
    (a slow block, a stalled testnet) no longer grows the record without bound."""
    book = JobBook(max_templates=2)
    generations = [build_job(make_gbt(n_txs=1 + g, prevhash=TIP_A), job_id=f"g{g}") for g in range(6)]
    for g, job in enumerate(generations):
        book.add(job)
        for n in range(100):
            assert book.claim(job, bytes([g, n]) * 16)
        assert book.claimed == 100 * min(g + 1, 2)  # only the two live generations' solutions are kept
    assert book.get("g0") is Lookup.STALE  # its shares are refused as stale before any duplicate check


def test_jobbook_keeps_every_job_of_recent_templates() -> None:
    """A SOLO pool builds one job per payout address per template: thousands must all stay live, and only
    whole template generations beyond ``max_templates`` go stale."""
    book = JobBook(max_templates=3)
    generations = []
    for g in range(5):
        prepared = _job_on_tip(f"base{g}", TIP_A).prepared  # a new template on the same tip
        jobs = [make_job(f"{g}-{i}", prepared, [TxOut(1, P2WPKH_SCRIPT)], b"", 12, 0.0) for i in range(2000)]
        for job in jobs:
            book.add(job)
        generations.append(jobs)
    assert len(book) == 3 * 2000
    for g, jobs in enumerate(generations):
        expected_live = g >= 2
        for job in (jobs[0], jobs[1999]):
            found = book.get(job.job_id)
            assert (found is job) if expected_live else (found is Lookup.STALE)


def test_total_fees_is_summed_once_at_parse() -> None:
    """Read for every accepted share: a field computed when the template is parsed, not a sum per read."""
    gbt = make_gbt(n_txs=5)
    template = parse_template(gbt)
    assert template.total_fees == sum(tx["fee"] for tx in gbt["transactions"]) > 0
    assert "total_fees" in type(template).__dataclass_fields__
