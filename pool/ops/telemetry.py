"""Telemetry: Prometheus metrics (one registry per pool instance, named after Prometheus conventions) and the
structlog set-up (JSON lines in production, readable console output in a terminal).

Kept in one place so dashboards and alert rules have a single list to refer to; the server and node modules
only call these objects.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)


class Metrics:
    """All metrics the pool exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.loop_lag_seconds = Histogram(
            "pool_event_loop_lag_seconds",
            "How late the event loop wakes a 0.5 s timer (a busy loop delays every miner)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.worker_hashrate = Gauge(
            "pool_worker_hashrate_hashes_per_second",
            "Per-worker hashrate over the stats window (capped number of series)",
            ["worker"],
            registry=r,
        )
        self.worker_last_share_age = Gauge(
            "pool_worker_last_share_age_seconds", "Seconds since the worker's last accepted share", ["worker"],
            registry=r,
        )
        self.pool_hashrate = Gauge("pool_hashrate_hashes_per_second", "Pool hashrate over the stats window",
                                   registry=r)
        self.workers_active = Gauge("pool_workers_active", "Workers with a share in the stats window", registry=r)
        self.pending_payouts = Gauge("pool_pending_payouts_satoshis", "Credited but unpaid satoshis", registry=r)
        self.connections = Gauge("pool_connections", "Open Stratum connections", registry=r)
        self.sessions = Gauge("pool_sessions", "Stratum sessions by state", ["state"], registry=r)
        self.connects = Counter("pool_connects_total", "Accepted TCP connections", registry=r)
        self.disconnects = Counter("pool_disconnects_total", "Closed connections by reason", ["reason"], registry=r)
        self.proxy_headers = Counter(
            "pool_proxy_headers_total",
            "PROXY protocol headers by outcome: v1/v2 (miner address taken), own-address (UNKNOWN/LOCAL), or why"
            " the connection was refused (invalid, untrusted, timeout, eof, reset)",
            ["outcome"], registry=r)
        self.subscribes = Counter("pool_subscribes_total", "mining.subscribe requests answered", registry=r)
        self.authorizes = Counter("pool_authorizes_total", "mining.authorize by result", ["result"], registry=r)
        self.protocol_errors = Counter(
            "pool_protocol_errors_total", "Malformed or unsupported client messages", ["kind"], registry=r
        )
        self.shares = Counter("pool_shares_total", "Shares by result", ["result"], registry=r)
        self.share_rejects = Counter("pool_share_rejects_total", "Rejected shares by reason", ["reason"], registry=r)
        self.accepted_difficulty = Counter(
            "pool_accepted_difficulty_total", "Sum of accepted share difficulty (rate() is hashrate / 2**32)", registry=r
        )
        self.blocks = Counter(
            "pool_blocks_total",
            "Blocks by stage: found, submitted, accepted/rejected (by bitcoind), confirmed (in the node's chain"
            " right after submit), matured (100+ confirmations, credits payable), orphaned (left the main chain)",
            ["stage"],
            registry=r,
        )
        self.share_to_submit_seconds = Histogram(
            "pool_block_share_to_submit_seconds",
            "Time from a block-solving share to its submitblock request sent to bitcoind (first node)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.block_submit_resolved_seconds = Histogram(
            "pool_block_submit_resolved_seconds",
            "Time from a block-solving share to a definite answer from bitcoind (accepted or rejected)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.blocks_unresolved = Gauge(
            "pool_blocks_unresolved", "Found blocks still waiting for a definite answer from bitcoind", registry=r
        )
        self.block_oldest_unresolved_seconds = Gauge(
            "pool_block_oldest_unresolved_seconds",
            "Age of the oldest found block without a definite answer from bitcoind (0 when none)",
            registry=r,
        )
        self.block_file_write_failures = Counter(
            "pool_block_file_write_failures_total",
            "Found blocks whose .pending file could not be written (disk full, I/O error); submission went on",
            registry=r,
        )
        self.task_failures = Counter(
            "pool_task_failures_total",
            "Background task failures (each logged with its traceback; the task restarts with backoff)",
            ["task"],
            registry=r,
        )
        self.template_age_seconds = Gauge("pool_template_age_seconds", "Age of the current template", registry=r)
        self.template_height = Gauge("pool_template_height", "Height of the block being mined", registry=r)
        self.network_difficulty = Gauge("pool_network_difficulty", "Network difficulty of the template", registry=r)
        self.ledger_block_write_failures = Counter(
            "pool_ledger_block_write_failures_total",
            "Failed attempts to record a found block in the ledger (retried until it lands)",
            registry=r,
        )
        self.difficulty_hints = Counter(
            "pool_difficulty_hints_total",
            "Miner difficulty hints (suggest_difficulty/suggest_target/minimum-difficulty) by outcome:"
            " applied at once, or coalesced behind the per-connection rate limit",
            ["outcome"],
            registry=r,
        )
        self.new_tip_notify_seconds = Histogram(
            "pool_new_tip_notify_seconds",
            "Time from a new tip's template to its clean_jobs notify written to the last miner",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.jobs_broadcast = Counter("pool_jobs_broadcast_total", "Job broadcasts by kind", ["kind"], registry=r)
        self.templates = Counter(
            "pool_templates_total", "Templates adopted: full (getblocktemplate) or empty (coinbase-only, new tip)",
            ["kind"], registry=r)
        self.bitcoind_up = Gauge("pool_bitcoind_up", "1 when bitcoind answers and gives templates", registry=r)
        self.ledger_up = Gauge("pool_ledger_up", "1 while the ledger writer has its database (0: PostgreSQL"
                               " unreachable, shares answered 'not recorded')", registry=r)
        self.ledger_leader = Gauge("pool_ledger_leader", "1 while this process holds the ledger's leader lock and"
                                   " runs maturity and payments", registry=r)
        # One series per configured bitcoind ([[node]] names): bounded by the config.
        self.node_up = Gauge("pool_node_up", "1 when this bitcoind answered its last health probe on the right chain",
                             ["node"], registry=r)
        self.node_active = Gauge("pool_node_active", "1 for the bitcoind templates come from", ["node"], registry=r)
        self.node_tip_height = Gauge("pool_node_tip_height", "Height of this bitcoind's tip at its last probe",
                                     ["node"], registry=r)
        self.node_switches = Counter("pool_node_switches_total",
                                     "Template source moved to another bitcoind (failure, or a tip behind)", registry=r)
        self.rpc_seconds = Histogram(
            "pool_bitcoind_rpc_seconds", "bitcoind RPC latency by method", ["method"], registry=r
        )
        self.rpc_errors = Counter("pool_bitcoind_rpc_errors_total", "bitcoind RPC errors", ["method", "kind"], registry=r)
        self.rpc_stale_retries = Counter(
            "pool_bitcoind_rpc_stale_retries_total",
            "RPC calls retried at once on a fresh connection after bitcoind had closed the idle keep-alive one",
            ["method"],
            registry=r,
        )
        self.ledger_batch_size = Histogram(
            "pool_ledger_batch_size", "Writes per ledger commit", buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 2000),
            registry=r,
        )
        self.ledger_commit_seconds = Histogram(
            "pool_ledger_commit_seconds", "Ledger group-commit latency", registry=r
        )
        self.admin_auth_failures = Counter(
            "pool_admin_auth_failures_total",
            "Refused admin API requests by reason: missing, malformed, wrong (bearer token), query-token"
            " (token in the URL), cross-origin (a browser request from another site)",
            ["reason"],
            registry=r,
        )
        self.admin_actions = Counter(
            "pool_admin_actions_total", "Authenticated admin API requests by action and outcome (ok, refused)",
            ["action", "outcome"], registry=r,
        )
        self.authorize_refusals = Counter(
            "pool_authorize_refusals_total",
            "mining.authorize refused, by reason: not-allowlisted (authorization.mode = allowlist),"
            " invalid-username, too-many-workers, too-many-payout-addresses, site-curtailment (the miner's site is"
            " curtailed or ramping back)",
            ["reason"],
            registry=r,
        )
        self.allowlist_entries = Gauge("pool_allowlist_entries", "Addresses on the allowlist in force", registry=r)
        self.allowlist_reloads = Counter(
            "pool_allowlist_reloads_total", "Allowlist reloads (SIGHUP, admin API) by result: ok, refused (bad"
            " file; the list in force is kept)", ["result"], registry=r,
        )
        self.allowlist_drained = Counter(
            "pool_allowlist_drained_sessions_total", "Sessions closed because their address left the allowlist",
            registry=r,
        )
        self.best_share = Gauge(
            "pool_best_share_difficulty",
            "Highest share difficulty the pool has seen: in the current block round (since the pool's last found"
            " block) and all time (kept across restarts)",
            ["scope"],
            registry=r,
        )
        self.tls_reloads = Counter(
            "pool_tls_reloads_total", "Stratum TLS certificate reloads (SIGHUP) by result", ["result"], registry=r
        )

        # Several Stratum front-end processes (stratum.processes >= 2): their supervision, per process.
        self.frontend_up = Gauge("pool_frontend_up", "1 while the Stratum front-end process runs", ["process"],
                                 registry=r)
        self.frontend_restarts = Counter(
            "pool_frontend_restarts_total", "Stratum front-end processes started again after they exited",
            ["process"], registry=r)
        self.frontend_cpu_seconds = Gauge(
            "pool_frontend_cpu_seconds", "CPU time used by the Stratum front-end process (user + system)",
            ["process"], registry=r)
        self.frontend_memory_bytes = Gauge(
            "pool_frontend_resident_memory_bytes", "Resident memory of the Stratum front-end process", ["process"],
            registry=r)

    def observe_rpc(self, method: str, seconds: float, error: str | None) -> None:
        """NodeClient observer hook."""
        self.rpc_seconds.labels(method).observe(seconds)
        if error is not None:
            self.rpc_errors.labels(method, error).inc()


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog once for the whole process; ``auto`` picks console output on a TTY."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        # One write per record (message and newline together): the front-end processes share stderr, and
        # print() wrote the newline separately, so two processes' records could land on one line.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


async def watch_loop_lag(metrics: Metrics, period: float = 0.5) -> None:
    """Observe how late a ``period`` sleep wakes: the time the event loop was busy with something else (a long
    callback, GIL contention), the delay every miner's reply on that loop shared. One per process."""
    while True:
        start = time.perf_counter()
        await asyncio.sleep(period)
        metrics.loop_lag_seconds.observe(max(0.0, time.perf_counter() - start - period))
