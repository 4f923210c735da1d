"""Composition root: builds the parts from a Config, runs them together and shuts them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import structlog

from pool.bitcoin.address import address_to_script
from pool.config import Config
from pool.ledger.sqlite import Ledger
from pool.mining.template import BlockTemplate
from pool.node.blocks import BlockSubmitter, SubmitOutcome
from pool.node.regtest import RegtestNode, find_bitcoind_dir
from pool.node.rpc import NodeClient, RpcCredentials
from pool.node.work import TemplateSource
from pool.ops.metrics import Metrics
from pool.server.coordinator import Coordinator
from pool.server.server import StratumServer

log = structlog.get_logger("pool.app")


class PoolApp:
    """One running pool. ``start`` returns once Stratum is listening and work is ready (or bitcoind is down)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.node: RegtestNode | None = None
        self.client: NodeClient | None = None
        self.ledger: Ledger | None = None
        self.coordinator: Coordinator | None = None
        self.server: StratumServer | None = None
        self.source: TemplateSource | None = None
        self.submitter: BlockSubmitter | None = None
        self.pool_address = config.payout.pool_address
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()

    async def _start_managed_node(self) -> RpcCredentials:
        rc = self.config.regtest
        loop = asyncio.get_running_loop()
        node = RegtestNode(
            Path(self.config.data_dir) / "regtest-node",
            find_bitcoind_dir(rc.bitcoind_dir),
            rpc_port=rc.rpc_port,
            zmq_port=rc.zmq_port,
        )
        await loop.run_in_executor(None, node.start)
        self.node = node
        await loop.run_in_executor(None, node.ensure_wallet)
        if not self.pool_address:
            self.pool_address = str(await loop.run_in_executor(None, lambda: node.rpc("getnewaddress", wallet="pool")))
        log.info("regtest_bitcoind_started", rpc_port=node.rpc_port, datadir=str(node.datadir))
        return node.credentials

    async def start(self) -> None:
        cfg = self.config
        if cfg.regtest.managed:
            creds = await self._start_managed_node()
            zmq = self.node.zmq_endpoint if self.node else ""
        else:
            nc = cfg.node
            creds = RpcCredentials(nc.rpc_url, nc.rpc_user, nc.rpc_password, nc.rpc_cookie_file)
            zmq = nc.zmq_hashblock
        self.client = NodeClient(creds, cfg.node.rpc_timeout, observer=self.metrics.observe_rpc)
        info = await self.client.wait_ready(
            time.monotonic() + 120, on_wait=lambda e: log.warning("waiting_for_bitcoind", error=e)
        )
        chain = info.get("chain") if isinstance(info, dict) else None
        expected = {"main": "main", "test": "test", "testnet4": "testnet4", "signet": "signet", "regtest": "regtest"}
        if chain and chain != expected[cfg.node.network]:
            raise RuntimeError(f"node.network is {cfg.node.network!r} but bitcoind runs chain {chain!r}")
        pool_script = address_to_script(self.pool_address, cfg.node.network) if self.pool_address else None
        self.ledger = Ledger(cfg.ledger_file)
        self.ledger.on_commit = self._on_commit
        self.submitter = BlockSubmitter(self.client, Path(cfg.data_dir) / "blocks", self._on_block_outcome)
        self.coordinator = Coordinator(cfg, pool_script, self.ledger, self.submitter, self.metrics)
        self.server = StratumServer(cfg, self.coordinator, self.metrics)
        self.source = TemplateSource(
            self.client,
            self._on_template,
            refresh_interval=cfg.node.refresh_interval,
            longpoll=cfg.node.longpoll,
            zmq_endpoint=zmq,
            on_health=lambda up: self.metrics.bitcoind_up.set(1 if up else 0),
        )
        await self.submitter.resubmit_pending()
        await self.source.fetch("start")
        await self.server.start()
        self._tasks.append(asyncio.create_task(self.source.run(), name="template-source"))
        self._tasks.append(asyncio.create_task(self._age_loop(), name="template-age"))

    def _on_commit(self, size: int, seconds: float) -> None:
        self.metrics.ledger_batch_size.observe(size)
        self.metrics.ledger_commit_seconds.observe(seconds)

    def _on_template(self, template: BlockTemplate, new_tip: bool, reason: str) -> None:
        assert self.coordinator is not None
        start = time.perf_counter()
        try:
            self.coordinator.set_template(template)
        except ValueError as exc:
            log.error("template_rejected", error=str(exc), height=template.height)
            return
        sent = self.server.broadcast(clean=new_tip) if self.server is not None else 0
        if new_tip:
            self.metrics.new_tip_notify_seconds.observe(time.perf_counter() - start)
        log.info("new_work", height=template.height, new_tip=new_tip, reason=reason, miners=sent,
                 txs=len(template.transactions))

    def _on_block_outcome(self, outcome: SubmitOutcome) -> None:
        stage = "accepted" if outcome.accepted else "rejected"
        self.metrics.blocks.labels("submitted").inc()
        self.metrics.blocks.labels(stage).inc()
        if outcome.confirmed:
            self.metrics.blocks.labels("confirmed").inc()
        self.metrics.share_to_submit_seconds.observe(max(0.0, time.time() - outcome.block.found_at))
        if self.ledger is not None:
            self.ledger.set_block_status(outcome.block.block_hash, "confirmed" if outcome.confirmed else stage)
        if self.source is not None:
            self.source.trigger("block-found")

    async def _age_loop(self) -> None:
        while True:
            if self.source is not None and self.source.fetched_at:
                self.metrics.template_age_seconds.set(time.monotonic() - self.source.fetched_at)
            await asyncio.sleep(1)

    async def run_until_stopped(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        self._stopped.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.server is not None:
            await self.server.close()
        if self.submitter is not None:
            await self.submitter.drain()
        if self.ledger is not None:
            self.ledger.close()
        if self.client is not None:
            self.client.close()
        if self.node is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.node.stop)
