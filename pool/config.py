"""Configuration: read once, from TOML, into typed frozen values; every error names the bad key.

``pool run`` with no ``--config`` uses the embedded default: a regtest bitcoind the pool starts itself, a
SQLite ledger under ``./data`` and Stratum on 127.0.0.1:3333. Secrets may come from the environment
(``POOL_RPC_PASSWORD``, ``POOL_ADMIN_TOKEN``) or files (bitcoind's cookie, ``admin.token_file``) instead of
the config file. Files the pool needs later (TLS certificate and key) are checked here, so ``pool check-config``
catches them too.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pool.bitcoin.address import NETWORKS, AddressError, address_to_script
from pool.mining.allowlist import Allowlist, AllowlistError, parse_allowlist
from pool.programme.siteconfig import ProgrammeConfig, SiteConfigError, parse_programme
from pool.server.guard import GuardConfig
from pool.server.tls import TlsError, load_tls_context


class ConfigError(Exception):
    """A configuration problem, phrased for the operator: names the key and what is wrong."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One bitcoind. The pool-wide settings (``POOL_WIDE_NODE_KEYS``: network, longpoll, refresh_interval,
    submit_retry_max_delay, empty_block_first) are written once, in the first node, and copied into the others."""

    name: str = "node1"  # metric label and log field: configured, so bounded
    rpc_url: str = "http://127.0.0.1:8332"
    rpc_user: str = ""
    rpc_password: str = field(default="", repr=False)
    rpc_cookie_file: str = ""
    rpc_timeout: float = 30.0
    network: str = "main"
    zmq_hashblock: str = ""
    longpoll: bool = True
    refresh_interval: float = 30.0
    submit_retry_max_delay: float = 5.0  # cap of the backoff between submitblock attempts to an unreachable node
    empty_block_first: bool = True  # on a ZMQ tip: coinbase-only work at once, the full template after


@dataclass(frozen=True, slots=True)
class StratumConfig:
    host: str = "0.0.0.0"
    port: int = 3333
    extranonce1_size: int = 4
    extranonce2_size: int = 8
    max_line_bytes: int = 16 * 1024
    pool_tag: str = "/pool/"
    version_mask: int = 0x1FFFE000
    subscribe_timeout: float = 30.0
    authorize_timeout: float = 60.0
    idle_timeout: float = 600.0
    max_connections: int = 100_000
    max_connections_per_ip: int = 1024
    max_pending_output_bytes: int = 1 << 20  # per connection: replies queued and not yet sent; beyond: dropped
    guard: GuardConfig = GuardConfig()  # rate limits, invalid-share escalation, bans
    session_resume_seconds: float = 600.0
    tls_port: int | None = None  # None: no TLS listener; 0: any free port
    tls_cert: str = ""
    tls_key: str = ""
    # Stratum front-end processes (pool/server/frontends.py): 1 keeps everything in one process. A config
    # file that does not set it (or sets 0) gets one per core (config.cores()); this value is for code.
    processes: int = 1
    proxy_protocol: bool = False  # every connection starts with a PROXY protocol v1/v2 header (load balancer)
    proxy_trusted: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # source networks allowed to send one


@dataclass(frozen=True, slots=True)
class DifficultyConfig:
    start: float = 1024.0
    minimum: float = 1.0
    maximum: float = 2.0**40
    target_share_interval: float = 10.0
    retarget_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class PayoutConfig:
    scheme: str = "pplns"
    pool_address: str = ""
    fee_percent: float = 1.0
    pplns_factor: float = 2.0
    maturity_margin: int = 1
    maturity_check_interval: float = 30.0
    payments_enabled: bool = False
    payment_threshold: int = 1_000_000  # satoshis
    payment_interval: float = 600.0
    payment_grace: float = 120.0
    wallet: str = ""


@dataclass(frozen=True, slots=True)
class RegtestConfig:
    """Embedded mode: the pool starts and owns a regtest bitcoind (for trying the pool and for tests)."""

    managed: bool = False
    bitcoind_dir: str = ""
    rpc_port: int = 0
    zmq_port: int = 0


MAX_PROCESSES = 256
NODE_ID_BITS = 8
BIP320_MASK = 0x1FFFE000  # the version bits BIP 320 leaves for general purpose (version rolling)
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The operator API (/admin/*): off without a token; on the metrics listener unless ``port`` is set."""

    token: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    port: int | None = None  # None: served on the metrics listener; set: only on a listener of its own
    reconnect_allowlist: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.token)


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """Chart history in the ledger (ledger/history.py): how often it is written and how long it is kept."""

    flush_interval: float = 15.0  # seconds between writes of the work summed in memory
    minutely_keep_hours: float = 48.0
    hourly_keep_days: float = 90.0


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """The read-only web pages (ops/dashboard.py), served on the metrics listener."""

    enabled: bool = True
    title: str = "pool"


@dataclass(frozen=True, slots=True)
class AuthorizationConfig:
    """Who may mine: anyone with a valid address (``open``), or only licensed addresses (``allowlist``)."""

    mode: str = "open"
    allowlist_file: str = ""
    drain_rate: float = 20.0  # sessions of removed addresses closed per second
    allowlist: Allowlist | None = field(default=None, compare=False, repr=False)  # as read at start-up

    @property
    def enforced(self) -> bool:
        return self.mode == "allowlist"


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """``pool report``: the fleet's energy efficiency, used for every site without one of its own."""

    efficiency_j_per_th: float = 30.0


@dataclass(frozen=True, slots=True)
class Config:
    node: NodeConfig = NodeConfig()  # the first (preferred) bitcoind
    extra_nodes: tuple[NodeConfig, ...] = ()  # more bitcoinds, in order of preference (``[[node]]``)
    stratum: StratumConfig = StratumConfig()
    difficulty: DifficultyConfig = DifficultyConfig()
    payout: PayoutConfig = PayoutConfig()
    regtest: RegtestConfig = RegtestConfig()
    admin: AdminConfig = AdminConfig()
    programme: ProgrammeConfig = ProgrammeConfig()  # [[site]] and [programme]: sites, energy, curtailment
    history: HistoryConfig = HistoryConfig()
    dashboard: DashboardConfig = DashboardConfig()
    authorization: AuthorizationConfig = AuthorizationConfig()
    report: ReportConfig = ReportConfig()
    data_dir: str = "data"
    ledger_path: str = ""
    ledger_url: str = ""  # postgresql://user@host:port/db selects PostgreSQL (else the SQLite file)
    ledger_password: str = field(default="", repr=False)  # POOL_LEDGER_PASSWORD or ledger.password_file
    metrics_enabled: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9100
    metrics_max_worker_series: int = 500
    log_level: str = "info"
    log_format: str = "auto"
    # This pool node's number among pool nodes sharing one ledger: the top byte of every extranonce1 it hands
    # out, so no two nodes (nor two front-end processes of one node) ever give miners the same coinbase space.
    node_id: int = 0

    @property
    def nodes(self) -> tuple[NodeConfig, ...]:
        """Every configured bitcoind, the preferred first."""
        return (self.node, *self.extra_nodes)

    @property
    def ledger_file(self) -> Path:
        return Path(self.ledger_path) if self.ledger_path else Path(self.data_dir) / "ledger.sqlite3"

    @property
    def ledger_source(self) -> Any:
        """What to open: the PostgreSQL database (``pg.PgTarget``) when ``ledger.url`` is set, else the file."""
        if not self.ledger_url:
            return self.ledger_file
        from pool.ledger.pg import PgTarget

        return PgTarget(self.ledger_url, self.ledger_password or None)


SCHEMES = ("pplns", "pps", "fpps", "solo")


class _Reader:
    """Typed access to one TOML table; every mistake names ``section.key``."""

    def __init__(self, table: dict[str, Any], section: str) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        self._t = dict(table)
        self._s = section

    def _name(self, key: str) -> str:
        return f"{self._s}.{key}" if self._s else key

    def _get(self, key: str, default: Any, kinds: tuple[type, ...], kind_name: str) -> Any:
        if key not in self._t:
            return default
        value = self._t.pop(key)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self._name(key)} must be {kind_name}, got {value!r}")
        if not isinstance(value, kinds):
            raise ConfigError(f"{self._name(key)} must be {kind_name}, got {type(value).__name__} {value!r}")
        return value

    def string(self, key: str, default: str) -> str:
        return self._get(key, default, (str,), "a string")

    def boolean(self, key: str, default: bool) -> bool:
        return self._get(key, default, (bool,), "true or false")

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self._get(key, default, (int,), "an integer")
        if not lo <= value <= hi:
            raise ConfigError(f"{self._name(key)} must be between {lo} and {hi}, got {value}")
        return value

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        value = float(self._get(key, default, (int, float), "a number"))
        if not lo <= value <= hi:
            raise ConfigError(f"{self._name(key)} must be between {lo} and {hi}, got {value}")
        return value

    def optional_integer(self, key: str, lo: int, hi: int) -> int | None:
        if key not in self._t:
            return None
        return self.integer(key, 0, lo, hi)

    def string_list(self, key: str) -> tuple[str, ...]:
        values = self._get(key, [], (list,), "a list of strings")
        if not all(isinstance(v, str) and v.strip() for v in values):
            raise ConfigError(f"{self._name(key)} must be a list of non-empty strings, got {values!r}")
        return tuple(values)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, default).lower()
        if value not in choices:
            raise ConfigError(f"{self._name(key)} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def done(self) -> None:
        if self._t:
            unknown = ", ".join(self._name(k) for k in sorted(self._t))
            raise ConfigError(f"unknown setting(s): {unknown} (see config/example.toml)")


def _check_zmq_endpoint(key: str, endpoint: str) -> None:
    """``tcp://HOST:PORT`` or ``ipc://PATH``, checked here: libzmq's own refusal comes only at run time."""
    scheme, sep, rest = endpoint.partition("://")
    hint = "must be tcp://HOST:PORT or ipc://PATH (bitcoind's -zmqpubhashblock)"
    if not sep or scheme not in ("tcp", "ipc"):
        raise ConfigError(f"{key} {hint}, got {endpoint!r}")
    if scheme == "ipc":
        if not rest:
            raise ConfigError(f"{key} needs a path after ipc://, got {endpoint!r}")
        return
    host, colon, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # IPv6 literal
    if not colon or not host or "/" in rest:
        raise ConfigError(f"{key} {hint}: host and port are both required, got {endpoint!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key} port must be 1-65535, got {endpoint!r}")


def _section(raw: dict[str, Any], name: str) -> _Reader:
    return _Reader(raw.pop(name, {}), name)


def parse_config(raw: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    """Build a Config from parsed TOML; raise ConfigError naming the first bad key."""
    env = dict(os.environ if env is None else env)
    raw = dict(raw)
    nodes = _nodes(raw.pop("node", {}), env)
    node = nodes[0]

    s = _section(raw, "stratum")
    mask_text = s.string("version_mask", "1fffe000")
    try:
        mask = int(mask_text, 16)
    except ValueError as exc:
        raise ConfigError(f"stratum.version_mask must be 8 hex digits, got {mask_text!r}") from exc
    if not 0 <= mask <= 0xFFFFFFFF:
        raise ConfigError(f"stratum.version_mask must be 8 hex digits, got {mask_text!r}")
    if mask & ~BIP320_MASK:
        raise ConfigError(
            f"stratum.version_mask must be the BIP 320 general-purpose bits {BIP320_MASK:08x} or a subset of them,"
            f" got {mask:08x} (bits {mask & ~BIP320_MASK:08x} are outside)"
        )
    stratum = StratumConfig(
        host=s.string("host", "0.0.0.0"),
        port=s.integer("port", 3333, 0, 65535),
        extranonce1_size=s.integer("extranonce1_size", 4, 2, 8),
        extranonce2_size=s.integer("extranonce2_size", 8, 2, 16),
        max_line_bytes=s.integer("max_line_bytes", 16 * 1024, 1024, 1 << 20),
        pool_tag=s.string("pool_tag", "/pool/"),
        version_mask=mask,
        subscribe_timeout=s.number("subscribe_timeout", 30.0, 1, 3600),
        authorize_timeout=s.number("authorize_timeout", 60.0, 1, 3600),
        idle_timeout=s.number("idle_timeout", 600.0, 10, 86400),
        max_connections=s.integer("max_connections", 100_000, 1, 10_000_000),
        max_connections_per_ip=s.integer("max_connections_per_ip", 1024, 1, 10_000_000),
        # Miners that use get_transactions need room for its answer: about 67 bytes per template transaction.
        max_pending_output_bytes=s.integer("max_pending_output_bytes", 1 << 20, 1 << 16, 1 << 30),
        guard=GuardConfig(
            connect_rate_per_ip=s.number("connect_rate_per_ip", 20.0, 0.01, 1e6),
            connect_burst_per_ip=s.number("connect_burst_per_ip", 200.0, 1, 1e7),
            submit_rate=s.number("submit_rate", 50.0, 0.01, 1e6),
            submit_burst=s.number("submit_burst", 500.0, 1, 1e7),
            invalid_share_limit=s.integer("invalid_share_limit", 50, 1, 1_000_000),
            strikes_to_ban=s.integer("strikes_to_ban", 3, 1, 1000),
            ban_seconds=s.number("ban_seconds", 600.0, 0, 86400 * 30),
        ),
        session_resume_seconds=s.number("session_resume_seconds", 600.0, 0, 86400),
        tls_port=s.optional_integer("tls_port", 0, 65535),
        tls_cert=s.string("tls_cert", ""),
        tls_key=s.string("tls_key", ""),
        processes=s.integer("processes", 0, 0, MAX_PROCESSES) or cores(),
        proxy_protocol=s.boolean("proxy_protocol", False),
        proxy_trusted=_networks(s, "proxy_trusted", ("127.0.0.0/8", "::1/128")),
    )
    s.done()
    if stratum.proxy_protocol and not stratum.proxy_trusted:
        raise ConfigError("stratum.proxy_trusted is empty while stratum.proxy_protocol = true: no connection could"
                          " be accepted; list the load balancers' networks")
    if len(stratum.pool_tag.encode()) > 60:
        raise ConfigError("stratum.pool_tag must be at most 60 bytes")
    _check_tls(stratum)

    d = _section(raw, "difficulty")
    difficulty = DifficultyConfig(
        start=d.number("start", 1024.0, 1e-12, 2.0**64),
        minimum=d.number("min", 1.0, 1e-12, 2.0**64),
        maximum=d.number("max", 2.0**40, 1e-12, 2.0**64),
        target_share_interval=d.number("target_share_interval", 10.0, 0.1, 3600),
        retarget_seconds=d.number("retarget_seconds", 30.0, 1, 3600),
    )
    d.done()
    if not difficulty.minimum <= difficulty.start <= difficulty.maximum:
        raise ConfigError("difficulty.start must lie between difficulty.min and difficulty.max")

    p = _section(raw, "payout")
    payout = PayoutConfig(
        scheme=p.choice("scheme", "pplns", SCHEMES),
        pool_address=p.string("pool_address", ""),
        fee_percent=p.number("fee_percent", 1.0, 0, 100),
        pplns_factor=p.number("pplns_factor", 2.0, 0.01, 100),
        maturity_margin=p.integer("maturity_margin", 1, 0, 1000),
        maturity_check_interval=p.number("maturity_check_interval", 30.0, 0.1, 3600),
        payments_enabled=p.boolean("payments_enabled", False),
        payment_threshold=p.integer("payment_threshold_sats", 1_000_000, 546, 21_000_000 * 100_000_000),
        payment_interval=p.number("payment_interval", 600.0, 0.1, 86400),
        payment_grace=p.number("payment_grace", 120.0, 0, 86400),
        wallet=p.string("wallet", ""),
    )
    p.done()

    r = _section(raw, "regtest")
    regtest = RegtestConfig(
        managed=r.boolean("managed", False),
        bitcoind_dir=r.string("bitcoind_dir", ""),
        rpc_port=r.integer("rpc_port", 0, 0, 65535),
        zmq_port=r.integer("zmq_port", 0, 0, 65535),
    )
    r.done()
    if regtest.managed and len(nodes) > 1:
        raise ConfigError("regtest.managed = true starts one bitcoind of its own: list no further [[node]] entries")
    if regtest.managed and node.network != "regtest":
        raise ConfigError("regtest.managed = true needs node.network = \"regtest\"")
    if payout.pool_address:
        try:
            address_to_script(payout.pool_address, node.network)
        except AddressError as exc:
            raise ConfigError(f"payout.pool_address is not a valid {node.network} address: {exc}") from exc
    elif payout.scheme != "solo" and not regtest.managed:
        raise ConfigError(f"payout.pool_address is required for scheme {payout.scheme!r}")

    admin = _admin(_section(raw, "admin"), env)
    try:
        programme = parse_programme(raw.pop("site", []), raw.pop("programme", {}))
    except SiteConfigError as exc:
        raise ConfigError(str(exc)) from exc
    history, dashboard = _history(_section(raw, "history")), _dashboard(_section(raw, "dashboard"))
    authorization = _authorization(_section(raw, "authorization"), node.network)
    rp = _section(raw, "report")
    report = ReportConfig(efficiency_j_per_th=rp.number("efficiency_j_per_th", 30.0, 0.001, 1e6))
    rp.done()

    top = _Reader(raw, "")
    ledger_table = _Reader(top._get("ledger", {}, (dict,), "a table"), "ledger")
    ledger_url, ledger_password = _ledger_url(ledger_table, env)
    metrics_table = _Reader(top._get("metrics", {}, (dict,), "a table"), "metrics")
    log_table = _Reader(top._get("logging", {}, (dict,), "a table"), "logging")
    config = Config(
        node=node,
        extra_nodes=nodes[1:],
        stratum=stratum,
        difficulty=difficulty,
        payout=payout,
        regtest=regtest,
        admin=admin,
        programme=programme,
        history=history,
        dashboard=dashboard,
        authorization=authorization,
        report=report,
        data_dir=top.string("data_dir", "data"),
        ledger_path=ledger_table.string("path", ""),
        ledger_url=ledger_url,
        ledger_password=ledger_password,
        metrics_enabled=metrics_table.boolean("enabled", True),
        metrics_host=metrics_table.string("host", "127.0.0.1"),
        metrics_port=metrics_table.integer("port", 9100, 0, 65535),
        metrics_max_worker_series=metrics_table.integer("max_worker_series", 500, 0, 100_000),
        log_level=log_table.choice("level", "info", ("debug", "info", "warning", "error")),
        log_format=log_table.choice("format", "auto", ("auto", "json", "console")),
        node_id=top.integer("node_id", 0, 0, (1 << NODE_ID_BITS) - 1),
    )
    for reader in (top, ledger_table, metrics_table, log_table):
        reader.done()
    _check_extranonce_space(stratum)
    if admin.enabled and admin.port is None and not config.metrics_enabled:
        raise ConfigError("an admin token is set but metrics.enabled = false and admin.port is not set:"
                          " set admin.port to serve the admin API on a listener of its own")
    return config


def cores() -> int:
    """``stratum.processes = 0`` (the default): one Stratum process per core this process may run on."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    return max(1, min(count, MAX_PROCESSES))


def process_bits(processes: int) -> int:
    """Bits of extranonce1 that name the front-end process (0 for one process)."""
    return (processes - 1).bit_length()


def _check_extranonce_space(stratum: StratumConfig) -> None:
    """extranonce1 is [node_id: 8 bits][process index][counter]: the counter must cover every connection a
    front-end may hold (``max_connections`` is split evenly across the processes)."""
    counter_bits = 8 * stratum.extranonce1_size - NODE_ID_BITS - process_bits(stratum.processes)
    per_process = -(-stratum.max_connections // stratum.processes)
    if counter_bits < 1 or 1 << counter_bits < per_process:
        raise ConfigError(
            f"stratum.extranonce1_size = {stratum.extranonce1_size} leaves {max(counter_bits, 0)} bits per process"
            f" after the node id (8 bits) and {stratum.processes} processes: too few for"
            f" stratum.max_connections = {stratum.max_connections}; raise extranonce1_size or lower max_connections"
        )


NODE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MAX_NODES = 16
# Written once, in the first node; the same for every bitcoind the pool uses.
POOL_WIDE_NODE_KEYS = ("network", "longpoll", "refresh_interval", "submit_retry_max_delay", "empty_block_first")


def _nodes(table: Any, env: dict[str, str]) -> tuple[NodeConfig, ...]:
    """``[node]`` (one bitcoind) or ``[[node]]`` (several, the preferred first); each entry is checked alone,
    then together (names and URLs unique)."""
    if isinstance(table, dict):
        entries, plural = [table], False
    elif isinstance(table, list) and table and all(isinstance(t, dict) for t in table):
        entries, plural = table, True
    else:
        raise ConfigError("node must be a table ([node]) or a non-empty list of tables ([[node]])")
    if len(entries) > MAX_NODES:
        raise ConfigError(f"node: at most {MAX_NODES} [[node]] entries, got {len(entries)}")
    nodes: list[NodeConfig] = []
    for i, entry in enumerate(entries):
        section = f"node[{i + 1}]" if plural else "node"
        if i > 0:
            for key in POOL_WIDE_NODE_KEYS:
                if key in entry:
                    raise ConfigError(f"{section}.{key}: {', '.join(POOL_WIDE_NODE_KEYS)} are pool-wide; write them"
                                      " in the first [[node]] entry only")
        nodes.append(_node(_Reader(entry, section), section, i, env, nodes[0] if nodes else None))
    seen_names: dict[str, int] = {}
    seen_urls: dict[str, int] = {}
    for i, n in enumerate(nodes, 1):
        if n.name in seen_names:
            raise ConfigError(f"node[{i}].name {n.name!r} is already used by node[{seen_names[n.name]}]")
        if n.rpc_url.rstrip("/") in seen_urls:
            raise ConfigError(f"node[{i}].rpc_url {n.rpc_url!r} is already used by node[{seen_urls[n.rpc_url.rstrip('/')]}]")
        seen_names[n.name] = seen_urls[n.rpc_url.rstrip("/")] = i
    return tuple(nodes)


def _node(n: _Reader, section: str, index: int, env: dict[str, str], first: NodeConfig | None) -> NodeConfig:
    name = n.string("name", f"node{index + 1}")
    if not NODE_NAME.fullmatch(name):
        raise ConfigError(f"{section}.name must be 1-32 letters, digits, '.', '_' or '-', got {name!r}")
    node = NodeConfig(
        name=name,
        rpc_url=n.string("rpc_url", "http://127.0.0.1:8332"),
        rpc_user=n.string("rpc_user", env.get("POOL_RPC_USER", "")),
        rpc_password=n.string("rpc_password", env.get("POOL_RPC_PASSWORD", "")),
        rpc_cookie_file=n.string("rpc_cookie_file", ""),
        rpc_timeout=n.number("rpc_timeout", 30.0, 1, 600),
        network=first.network if first else n.choice("network", "main", tuple(NETWORKS)),
        zmq_hashblock=n.string("zmq_hashblock", ""),
        longpoll=first.longpoll if first else n.boolean("longpoll", True),
        refresh_interval=first.refresh_interval if first else n.number("refresh_interval", 30.0, 1, 110),
        submit_retry_max_delay=(first.submit_retry_max_delay if first
                                else n.number("submit_retry_max_delay", 5.0, 0.2, 60)),
        empty_block_first=first.empty_block_first if first else n.boolean("empty_block_first", True),
    )
    n.done()
    if not node.rpc_url.startswith(("http://", "https://")):
        raise ConfigError(f"{section}.rpc_url must start with http:// or https://, got {node.rpc_url!r}")
    if node.zmq_hashblock:
        _check_zmq_endpoint(f"{section}.zmq_hashblock", node.zmq_hashblock)
    return node


def _networks(s: _Reader, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A list of CIDR networks (``10.0.0.0/8``, ``2001:db8::/32``; a bare address is one host)."""
    values = s.string_list(key) if key in s._t else default
    for value in values:
        try:
            ipaddress.ip_network(value.strip(), strict=False)
        except ValueError as exc:
            raise ConfigError(f"stratum.{key}: {value!r} is not an IP network (like 10.0.0.0/8): {exc}") from exc
    return tuple(v.strip() for v in values)


def _check_tls(stratum: StratumConfig) -> None:
    if stratum.tls_port is None:
        if stratum.tls_cert or stratum.tls_key:
            raise ConfigError("stratum.tls_cert/tls_key are set but stratum.tls_port is not: set the TLS port")
        return
    if not stratum.tls_cert:
        raise ConfigError("stratum.tls_port is set: stratum.tls_cert (PEM certificate chain) is required")
    if not stratum.tls_key:
        raise ConfigError("stratum.tls_port is set: stratum.tls_key (PEM private key) is required")
    if stratum.tls_port != 0 and stratum.tls_port == stratum.port:
        raise ConfigError(f"stratum.tls_port must differ from stratum.port ({stratum.port})")
    try:
        load_tls_context(stratum.tls_cert, stratum.tls_key)
    except TlsError as exc:
        raise ConfigError(str(exc)) from exc


def _ledger_url(t: _Reader, env: dict[str, str]) -> tuple[str, str]:
    """``ledger.url`` and its password (``POOL_LEDGER_PASSWORD`` or ``ledger.password_file``), checked; the
    password never goes into the URL, where logs and process lists would show it."""
    url = t.string("url", "")
    password_file = t.string("password_file", "")
    if not url:
        if password_file:
            raise ConfigError("ledger.password_file is set but ledger.url is not: set the PostgreSQL URL")
        return "", ""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"ledger.url must start with postgresql:// (got {url.split(':', 1)[0]!r}); leave it"
                          " unset for the SQLite file (ledger.path)")
    if re.match(r"^postgres(?:ql)?://[^:@/]*:[^@/]*@", url):
        raise ConfigError("ledger.url holds a password: remove it from the URL and give it in"
                          " POOL_LEDGER_PASSWORD or ledger.password_file (it would show in logs)")
    if t._t.get("path"):
        raise ConfigError("ledger.path and ledger.url are both set: keep one (url selects PostgreSQL)")
    password = env.get("POOL_LEDGER_PASSWORD", "")
    if password_file and not password:
        password = _read_secret("ledger.password_file", password_file)
    return url, password


def _read_secret(setting: str, path: str) -> str:
    """A secret kept in a file of its own (a Docker/Kubernetes secret): its text, stripped; never empty."""
    try:
        with open(path, encoding="utf-8") as fh:
            secret = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{setting}: cannot read {path!r}: {exc}") from exc
    if not secret:
        raise ConfigError(f"{setting}: {path!r} is empty")
    return secret


def _history(h: _Reader) -> HistoryConfig:
    history = HistoryConfig(
        flush_interval=h.number("flush_interval", 15.0, 1, 300),
        minutely_keep_hours=h.number("minutely_keep_hours", 48.0, 1, 24 * 31),
        hourly_keep_days=h.number("hourly_keep_days", 90.0, 1, 3660),
    )
    h.done()
    if history.hourly_keep_days * 24 < history.minutely_keep_hours:
        raise ConfigError("history.hourly_keep_days must cover history.minutely_keep_hours"
                          " (hourly rows outlive minutely ones)")
    return history


def _dashboard(d: _Reader) -> DashboardConfig:
    dashboard = DashboardConfig(enabled=d.boolean("enabled", True), title=d.string("title", "pool").strip())
    d.done()
    if not 0 < len(dashboard.title) <= 80 or not dashboard.title.isprintable():
        raise ConfigError(f"dashboard.title must be 1-80 printable characters, got {dashboard.title[:90]!r}")
    return dashboard


def _admin(a: _Reader, env: dict[str, str]) -> AdminConfig:
    token = a.string("token", "")
    token_file = a.string("token_file", "")
    source = "admin.token"
    if token and token_file:
        raise ConfigError("admin.token and admin.token_file are both set: keep one")
    if token_file:
        source = "admin.token_file"
        token = _read_secret(source, token_file)
    elif not token and env.get("POOL_ADMIN_TOKEN"):
        source, token = "POOL_ADMIN_TOKEN", env["POOL_ADMIN_TOKEN"].strip()
    if token and (len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token)):
        raise ConfigError(f"{source} must be at least {MIN_TOKEN_LENGTH} characters without spaces"
                          " (e.g. from: openssl rand -hex 32)")
    admin = AdminConfig(
        token=token,
        host=a.string("host", "127.0.0.1"),
        port=a.optional_integer("port", 0, 65535),
        reconnect_allowlist=tuple(h.strip().rstrip(".").lower() for h in a.string_list("reconnect_allowlist")),
    )
    a.done()
    if admin.port is not None and not admin.enabled:
        raise ConfigError("admin.port is set but no admin token is configured"
                          " (admin.token, admin.token_file or POOL_ADMIN_TOKEN)")
    return admin


def read_allowlist(path: str, network: str) -> Allowlist:
    """Read and parse the allowlist file; AllowlistError (bad lines, with numbers) or OSError (unreadable)."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    return parse_allowlist(text, network, source=path)


def _authorization(a: _Reader, network: str) -> AuthorizationConfig:
    mode = a.choice("mode", "open", ("open", "allowlist"))
    path = a.string("allowlist_file", "")
    drain_rate = a.number("drain_rate", 20.0, 0.1, 100_000)
    a.done()
    allowlist = None
    if mode == "allowlist" and not path:
        raise ConfigError('authorization.mode = "allowlist" needs authorization.allowlist_file')
    if path:
        try:
            allowlist = read_allowlist(path, network)
        except AllowlistError as exc:
            raise ConfigError(f"authorization.allowlist_file {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"authorization.allowlist_file: cannot read {path!r}: {exc}") from exc
    return AuthorizationConfig(mode, path, drain_rate, allowlist)


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read and validate a TOML config file."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {str(path)!r} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    return parse_config(raw, env)


def embedded_default(data_dir: str = "data", port: int = 3333, metrics_port: int = 9100) -> Config:
    """The zero-configuration mode: managed regtest bitcoind, Stratum on 127.0.0.1, tiny difficulties."""
    return parse_config(
        {
            "data_dir": data_dir,
            "node": {"network": "regtest", "rpc_url": "http://127.0.0.1:0", "refresh_interval": 20},
            "regtest": {"managed": True},
            "stratum": {"host": "127.0.0.1", "port": port, "pool_tag": "/pool-regtest/"},
            "difficulty": {"start": 0.001, "min": 0.0001, "max": 2.0**32},
            "payout": {"scheme": "pplns"},
            "metrics": {"port": metrics_port},
        },
        env={},
    )
