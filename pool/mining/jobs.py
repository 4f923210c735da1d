"""Block templates turned into Stratum jobs, and the book of live jobs shares are judged against.

A template from ``getblocktemplate`` is parsed and checked once at the edge (``parse_template``) so everything
downstream works on typed values. A job is one template plus one coinbase (one set of payout outputs). The
expensive per-template work (merkle branch, witness commitment) is done once in ``PreparedTemplate``; a job per
payout variant (SOLO pays each finder's own address) then costs only a coinbase serialization.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pool.bitcoin.coinbase import (
    CoinbaseParts,
    TxOut,
    build_coinbase,
    merkle_branch,
    witness_commitment,
    witness_commitment_script,
)
from pool.bitcoin.serialize import compact_size, hex_to_hash
from pool.bitcoin.target import bits_to_target, target_bytes, target_to_difficulty


class TemplateError(ValueError):
    """bitcoind returned a template we cannot mine on."""


@dataclass(frozen=True, slots=True)
class TemplateTx:
    """A non-coinbase transaction of the template."""

    data: bytes
    txid: bytes  # internal order
    wtxid: bytes  # internal order
    fee: int
    weight: int


@dataclass(frozen=True, slots=True)
class BlockTemplate:
    """The fields of a template that job building and block assembly need."""

    height: int
    version: int
    prevhash: bytes  # internal order
    bits: int
    curtime: int
    mintime: int
    coinbase_value: int
    transactions: tuple[TemplateTx, ...]
    default_witness_commitment: bytes | None
    longpollid: str | None
    rules: tuple[str, ...] = field(default=())
    # Read for every accepted share: summed once here, not per read (mainnet templates hold 1,500+ transactions).
    total_fees: int = 0

    @property
    def network_target(self) -> int:
        return bits_to_target(self.bits)

    @property
    def prevhash_hex(self) -> str:
        return self.prevhash[::-1].hex()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled with its transactions as plain tuples: the coordinator sends every template to each
        front-end process, and the default pickling of 1,500+ slotted dataclass instances (a Python-level
        ``__getstate__``/``__setstate__`` per object) held each process's loop for ~2.5 ms at both ends,
        against ~0.3 ms to dump and ~1 ms to load this way."""
        txs = tuple((tx.data, tx.txid, tx.wtxid, tx.fee, tx.weight) for tx in self.transactions)
        return _rebuild_template, (self.height, self.version, self.prevhash, self.bits, self.curtime, self.mintime,
                                   self.coinbase_value, txs, self.default_witness_commitment, self.longpollid,
                                   self.rules, self.total_fees)


def _rebuild_template(height: int, version: int, prevhash: bytes, bits: int, curtime: int, mintime: int,
                      coinbase_value: int, txs: tuple[tuple[Any, ...], ...], dwc: bytes | None,
                      longpollid: str | None, rules: tuple[str, ...], total_fees: int) -> BlockTemplate:
    return BlockTemplate(height, version, prevhash, bits, curtime, mintime, coinbase_value,
                         tuple(TemplateTx(*tx) for tx in txs), dwc, longpollid, rules, total_fees)


def parse_template(gbt: dict[str, Any]) -> BlockTemplate:
    """Turn bitcoind's JSON template into a BlockTemplate, or raise TemplateError naming the bad field."""
    try:
        txs = tuple(
            TemplateTx(
                data=bytes.fromhex(tx["data"]),
                txid=hex_to_hash(tx["txid"]),
                wtxid=hex_to_hash(tx.get("hash", tx["txid"])),
                fee=int(tx.get("fee", 0)),
                weight=int(tx.get("weight", 0)),
            )
            for tx in gbt["transactions"]
        )
        dwc = gbt.get("default_witness_commitment")
        template = BlockTemplate(
            height=int(gbt["height"]),
            version=int(gbt["version"]),
            prevhash=hex_to_hash(gbt["previousblockhash"]),
            bits=int(gbt["bits"], 16),
            curtime=int(gbt["curtime"]),
            mintime=int(gbt.get("mintime", 0)),
            coinbase_value=int(gbt["coinbasevalue"]),
            transactions=txs,
            default_witness_commitment=bytes.fromhex(dwc) if dwc else None,
            longpollid=gbt.get("longpollid"),
            rules=tuple(gbt.get("rules", ())),
            total_fees=sum(tx.fee for tx in txs),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TemplateError(f"malformed getblocktemplate result: {exc!r}") from exc
    if len(template.prevhash) != 32 or any(len(tx.txid) != 32 or len(tx.wtxid) != 32 for tx in txs):
        raise TemplateError("malformed getblocktemplate result: a hash is not 32 bytes")
    return template


def stratum_prevhash(prevhash: bytes) -> str:
    """Stratum's prevhash: the internal-order hash with every 4-byte word byte-swapped."""
    return b"".join(prevhash[i : i + 4][::-1] for i in range(0, 32, 4)).hex()


def be32(value: int) -> str:
    """Big-endian hex of a 32-bit value, as notify sends version, nbits and ntime."""
    return struct.pack(">I", value & 0xFFFFFFFF).hex()


@dataclass(frozen=True, slots=True)
class PreparedTemplate:
    """Per-template work shared by all the jobs built on it."""

    template: BlockTemplate
    branch: tuple[bytes, ...]
    commitment_script: bytes | None
    network_target: int
    branch_bytes: bytes
    network_target_le: bytes
    network_difficulty: float

    @classmethod
    def from_template(cls, template: BlockTemplate) -> PreparedTemplate:
        """Compute the merkle branch and our own witness commitment, checked against bitcoind's."""
        branch = tuple(merkle_branch([tx.txid for tx in template.transactions]))
        commitment_script: bytes | None = None
        # bitcoind lists required rules with a '!' prefix ("!segwit").
        segwit = any(rule.lstrip("!") == "segwit" for rule in template.rules)
        if segwit or template.default_witness_commitment is not None:
            commitment = witness_commitment([tx.wtxid for tx in template.transactions])
            commitment_script = witness_commitment_script(commitment)
            dwc = template.default_witness_commitment
            if dwc is not None and dwc != commitment_script:
                raise TemplateError(
                    f"witness commitment mismatch at height {template.height}: "
                    f"computed {commitment_script.hex()}, bitcoind says {dwc.hex()}"
                )
        target = template.network_target
        return cls(template, branch, commitment_script, target, b"".join(branch), target_bytes(target),
                   target_to_difficulty(target))

    def same_work(self, template: BlockTemplate) -> bool:
        """True when ``template`` would give miners exactly this work again (same tip, rules and transactions):
        only its clock moved, so a job built from it would be a copy of one already out."""
        t = self.template
        return (
            t.prevhash == template.prevhash
            and t.bits == template.bits
            and t.version == template.version
            and t.coinbase_value == template.coinbase_value
            and t.height == template.height
            and [tx.txid for tx in t.transactions] == [tx.txid for tx in template.transactions]
        )


@dataclass(slots=True, eq=False)
class Job:
    """One unit of work as sent in ``mining.notify``. ``payout_key`` is the address its coinbase pays (SOLO),
    empty when the coinbase pays the pool; ``fee`` is the pool-fee output it carries (satoshis)."""

    job_id: str
    prepared: PreparedTemplate
    coinbase: CoinbaseParts
    ntime: int
    created: float
    payout_key: str = ""
    fee: int = 0
    _lines: dict[bool, bytes] = field(default_factory=dict, repr=False)
    # What the job's headers are made of besides the miner's own fields (tip, version, bits, merkle branch,
    # coinbase): jobs with the same key give the same header for the same solution. Set by ``make_job``.
    work: bytes = b""

    @property
    def template(self) -> BlockTemplate:
        return self.prepared.template

    @property
    def network_difficulty(self) -> float:
        return self.prepared.network_difficulty

    def notify_params(self, clean_jobs: bool) -> list[object]:
        """Parameters of ``mining.notify`` in the encodings every Stratum V1 miner expects."""
        t = self.template
        return [
            self.job_id,
            stratum_prevhash(t.prevhash),
            self.coinbase.coinb1.hex(),
            self.coinbase.coinb2.hex(),
            [h.hex() for h in self.prepared.branch],
            be32(t.version),
            be32(t.bits),
            be32(self.ntime),
            clean_jobs,
        ]

    def notify_line(self, clean_jobs: bool) -> bytes:
        """The whole ``mining.notify`` line, serialized once per job and flag and sent as is to every miner:
        a new tip reaches thousands of connections, and the merkle branch alone is hundreds of bytes of JSON."""
        line = self._lines.get(clean_jobs)
        if line is None:
            message = {"id": None, "method": "mining.notify", "params": self.notify_params(clean_jobs)}
            line = self._lines[clean_jobs] = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        return line

    def block_bytes(self, header: bytes, extranonce1: bytes, extranonce2: bytes) -> bytes:
        """The full serialized block for a solved header: coinbase with witness, then every template tx."""
        t = self.template
        if self.prepared.commitment_script is not None:
            coinbase = self.coinbase.assemble_with_witness(extranonce1, extranonce2)
        else:
            coinbase = self.coinbase.assemble(extranonce1, extranonce2)
        return (
            header
            + compact_size(1 + len(t.transactions))
            + coinbase
            + b"".join(tx.data for tx in t.transactions)
        )


def make_job(
    job_id: str,
    prepared: PreparedTemplate,
    outputs: list[TxOut],
    pool_tag: bytes,
    extranonce_size: int,
    now: float,
    payout_key: str = "",
    fee: int = 0,
) -> Job:
    """Build the job paying ``outputs``; ntime starts at the template's curtime (never before mintime)."""
    t = prepared.template
    coinbase = build_coinbase(t.height, outputs, pool_tag, extranonce_size, prepared.commitment_script)
    ntime = max(t.curtime, t.mintime)
    work = hashlib.sha256(b"|".join((t.prevhash, struct.pack("<II", t.version, t.bits), prepared.branch_bytes,
                                     coinbase.coinb1, coinbase.coinb2))).digest()
    return Job(job_id, prepared, coinbase, ntime, now, payout_key, fee, work=work)


class Lookup(Enum):
    """Why a job id did not resolve to a live job."""

    UNKNOWN = "unknown"
    STALE = "stale"


class JobBook:
    """Live jobs by id, and the shares already credited on the current chain tip.

    Jobs of an older chain tip become stale; ids never seen are unknown. The jobs of the previous tip are kept
    (as stale) so a share solving a block on them can still be sent to bitcoind: right after a new tip a
    competing block may still win. Older stale ids are remembered without their jobs.

    Bounded by template generations, not job counts: the jobs of the newest ``max_templates`` templates of the
    current tip stay live however many payout variants each has (a SOLO pool with thousands of addresses
    builds thousands of jobs per template). ``max_jobs`` is a safety cap that evicts whole older generations
    and never the newest one, so no miner's current job is ever evicted. Difficulty changes do not add jobs:
    the session re-sends the same job under an alias (see ``StratumProtocol.send_job``).

    Duplicates are judged on what was hashed: ``claim`` takes the header hash, so one solution is credited
    once whichever job id (or renewal of an unchanged template) it arrives under. The hashes are kept per
    piece of work (``Job.work``), across every live job with that work, and dropped with the last live job
    of that work: jobs that differ in it can never produce the same header, and a share for a job no longer
    live is refused as stale before it is claimed. So memory follows the live jobs, not the tip's age.
    """

    def __init__(self, max_templates: int = 16, max_jobs: int = 1_000_000, max_stale: int = 100_000) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._generations: OrderedDict[int, list[str]] = OrderedDict()
        self._stale: OrderedDict[str, Job | None] = OrderedDict()
        self._max_templates = max_templates
        self._max_jobs = max_jobs
        self._max_stale = max_stale
        self._counter = 0
        self._seen: dict[bytes, set[bytes]] = {}  # Job.work -> header hashes credited on that work
        self.tip: bytes | None = None

    def next_id(self) -> str:
        self._counter += 1
        return f"{self._counter:x}"

    def add(self, job: Job) -> bool:
        """Register a job; returns True if it moves the book to a new chain tip (older jobs go stale)."""
        new_tip = job.template.prevhash != self.tip
        if new_tip:
            # Jobs two tips back lose their bodies; the previous tip's jobs stay for late block solutions.
            for old_id, old_job in self._stale.items():
                if old_job is not None:
                    self._stale[old_id] = None
            for old_id, old_job in self._jobs.items():
                self._remember_stale(old_id, old_job)
            self._jobs.clear()
            self._generations.clear()
            self._seen = {}
            self.tip = job.template.prevhash
        self._jobs[job.job_id] = job
        self._generations.setdefault(id(job.prepared), []).append(job.job_id)
        evicted = False
        while len(self._generations) > self._max_templates or (
            len(self._jobs) > self._max_jobs and len(self._generations) > 1
        ):
            _, old_ids = self._generations.popitem(last=False)
            evicted = True
            for old_id in old_ids:
                self._jobs.pop(old_id, None)
                self._remember_stale(old_id, None)
        if evicted and self._seen:
            live = {j.work for j in self._jobs.values()}
            for work in [w for w in self._seen if w not in live]:
                del self._seen[work]
        return new_tip

    def _remember_stale(self, job_id: str, job: Job | None) -> None:
        self._stale[job_id] = job
        while len(self._stale) > self._max_stale:
            self._stale.popitem(last=False)

    def get(self, job_id: str) -> Job | Lookup:
        job = self._jobs.get(job_id)
        if job is not None:
            return job
        return Lookup.STALE if job_id in self._stale else Lookup.UNKNOWN

    def stale_job(self, job_id: str) -> Job | None:
        """The job behind a stale id, while its tip is the previous one (for late block solutions)."""
        return self._stale.get(job_id)

    def claim(self, job: Job, header_hash: bytes) -> bool:
        """Mark a solution of ``job`` as credited; False when it already was (a duplicate)."""
        seen = self._seen.get(job.work)
        if seen is None:
            seen = self._seen[job.work] = set()
        elif header_hash in seen:
            return False
        seen.add(header_hash)
        return True

    def release(self, job: Job, header_hash: bytes) -> None:
        """Forget a solution whose credit did not stick (its ledger write failed), so a resubmission counts."""
        seen = self._seen.get(job.work)
        if seen is not None:
            seen.discard(header_hash)

    @property
    def claimed(self) -> int:
        """Solutions remembered for the duplicate check (the memory it costs)."""
        return sum(len(seen) for seen in self._seen.values())

    def __len__(self) -> int:
        return len(self._jobs)
