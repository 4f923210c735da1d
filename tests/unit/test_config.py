"""Configuration parsing: defaults, and errors that name the offending key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from pool.config import (
    Config,
    ConfigError,
    DifficultyConfig,
    NodeConfig,
    StratumConfig,
    embedded_default,
    load_config,
    parse_config,
)
from tests.unit.helpers import regtest_address

MAIN_ADDR = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
REGTEST_ADDR = regtest_address(7)
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"


RPC = {"rpc_url": "http://127.0.0.1:8332"}  # given explicitly: see test_rpc_url_default (xfail)


def minimal(**sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"node": dict(RPC), "payout": {"pool_address": MAIN_ADDR}}
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(name), dict):
            raw[name] = {**raw[name], **value}
        else:
            raw[name] = value
    return raw


def error_for(raw: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env={} if env is None else env)
    return str(info.value)


def test_rpc_url_default() -> None:
    cfg = parse_config({"payout": {"pool_address": MAIN_ADDR}}, env={})
    assert cfg.node.rpc_url == "http://127.0.0.1:8332"
    assert cfg.node == NodeConfig()


def test_defaults() -> None:
    cfg = parse_config(minimal(), env={})
    assert isinstance(cfg, Config)
    assert cfg.node == NodeConfig()
    assert cfg.stratum == StratumConfig()
    assert cfg.difficulty == DifficultyConfig()
    assert cfg.node.network == "main"
    assert cfg.stratum.port == 3333 and cfg.stratum.version_mask == 0x1FFFE000
    assert cfg.stratum.extranonce1_size == 4 and cfg.stratum.extranonce2_size == 8
    assert cfg.payout.scheme == "pplns" and cfg.payout.pool_address == MAIN_ADDR
    assert cfg.ledger_file == Path("data") / "ledger.sqlite3"
    assert cfg.log_level == "info" and cfg.log_format == "auto"
    assert cfg.regtest.managed is False


def test_full_values_are_read() -> None:
    cfg = parse_config(
        minimal(
            node={"network": "MAIN", "rpc_url": "https://node:8332", "zmq_hashblock": "tcp://127.0.0.1:28332", "longpoll": False},
            stratum={"port": 4444, "version_mask": "00ffe000", "pool_tag": "/x/", "extranonce2_size": 4},
            difficulty={"start": 0.5, "min": 0.001, "max": 1e6, "target_share_interval": 5},
            ledger={"path": "/tmp/l.sqlite3"},
            logging={"level": "DEBUG", "format": "json"},
        ),
        env={},
    )
    assert cfg.node.network == "main"  # choices are case-insensitive
    assert cfg.node.longpoll is False
    assert cfg.stratum.version_mask == 0x00FFE000 and cfg.stratum.port == 4444
    assert cfg.difficulty.start == 0.5 and cfg.difficulty.target_share_interval == 5.0
    assert isinstance(cfg.difficulty.target_share_interval, float)
    assert cfg.ledger_file == Path("/tmp/l.sqlite3")
    assert cfg.log_level == "debug"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (minimal(stratum={"port": "3333"}), "stratum.port"),
        (minimal(stratum={"port": True}), "stratum.port"),
        (minimal(stratum={"port": 3333.0}), "stratum.port"),
        (minimal(difficulty={"start": "1"}), "difficulty.start"),
        (minimal(node={"longpoll": "yes"}), "node.longpoll"),
        (minimal(node={"longpoll": 1}), "node.longpoll"),
        (minimal(node={"rpc_user": 5}), "node.rpc_user"),
        (minimal(stratum={"version_mask": 0x1FFFE000}), "stratum.version_mask"),
        (minimal(ledger="x"), "ledger"),
        (minimal(node=5), "[node]"),
    ],
)
def test_wrong_type_names_key(raw: dict[str, Any], key: str) -> None:
    assert key in error_for(raw)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (minimal(stratum={"port": 70000}), "stratum.port"),
        (minimal(stratum={"port": -1}), "stratum.port"),
        (minimal(stratum={"extranonce2_size": 1}), "stratum.extranonce2_size"),
        (minimal(stratum={"extranonce2_size": 17}), "stratum.extranonce2_size"),
        (minimal(stratum={"extranonce1_size": 9}), "stratum.extranonce1_size"),
        (minimal(node={"refresh_interval": 200}), "node.refresh_interval"),
        (minimal(difficulty={"min": 0}), "difficulty.min"),
        (minimal(payout={"fee_percent": 101}), "payout.fee_percent"),
        (minimal(metrics={"port": 65536}), "metrics.port"),
        (minimal(stratum={"version_mask": "1ffffffff"}), "stratum.version_mask"),
        (minimal(stratum={"version_mask": "-1"}), "stratum.version_mask"),
        (minimal(stratum={"version_mask": "zz"}), "stratum.version_mask"),
        (minimal(stratum={"pool_tag": "x" * 61}), "stratum.pool_tag"),
        (minimal(difficulty={"start": 0.5, "min": 1.0}), "difficulty.start"),
        (minimal(node={"rpc_url": "127.0.0.1:8332"}), "node.rpc_url"),
        (minimal(node={"zmq_hashblock": "127.0.0.1:28332"}), "node.zmq_hashblock"),
    ],
)
def test_out_of_range_names_key(raw: dict[str, Any], key: str) -> None:
    assert key in error_for(raw)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (minimal(stratum={"prot": 3333}), "stratum.prot"),
        (minimal(node={"rpcurl": "http://x"}), "node.rpcurl"),
        (minimal(payout={"sheme": "pps"}), "payout.sheme"),
        (minimal(metrics={"bogus": 1}), "metrics.bogus"),
        (minimal(logging={"lvl": "info"}), "logging.lvl"),
        (minimal(nodes={}), "nodes"),
        (minimal(data_directory="x"), "data_directory"),
    ],
)
def test_unknown_key_named(raw: dict[str, Any], key: str) -> None:
    message = error_for(raw)
    assert key in message and "unknown" in message


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (minimal(node={"network": "mainnet"}), "node.network"),
        (minimal(payout={"scheme": "prop"}), "payout.scheme"),
        (minimal(logging={"level": "verbose"}), "logging.level"),
        (minimal(logging={"format": "xml"}), "logging.format"),
    ],
)
def test_bad_choice_named(raw: dict[str, Any], key: str) -> None:
    assert key in error_for(raw)


def test_pool_address_for_wrong_network() -> None:
    message = error_for(minimal(node={"network": "regtest"}))
    assert "payout.pool_address" in message and "regtest" in message
    assert "payout.pool_address" in error_for({"node": RPC, "payout": {"pool_address": REGTEST_ADDR}})
    assert "payout.pool_address" in error_for({"node": RPC, "payout": {"pool_address": "not-an-address"}})


def test_pool_address_for_right_network() -> None:
    cfg = parse_config({"node": {**RPC, "network": "regtest"}, "payout": {"pool_address": REGTEST_ADDR}}, env={})
    assert cfg.payout.pool_address == REGTEST_ADDR


@pytest.mark.parametrize("scheme", ["pplns", "pps", "fpps"])
def test_missing_pool_address(scheme: str) -> None:
    message = error_for({"node": RPC, "payout": {"scheme": scheme}})
    assert "payout.pool_address" in message


def test_pool_address_optional_for_solo_and_managed_regtest() -> None:
    assert parse_config({"node": RPC, "payout": {"scheme": "solo"}}, env={}).payout.pool_address == ""
    cfg = parse_config({"node": {**RPC, "network": "regtest"}, "regtest": {"managed": True}}, env={})
    assert cfg.regtest.managed


def test_managed_regtest_needs_regtest_network() -> None:
    assert "regtest.managed" in error_for(minimal(regtest={"managed": True}))


def test_env_rpc_credentials() -> None:
    cfg = parse_config(minimal(), env={"POOL_RPC_PASSWORD": "s3cret", "POOL_RPC_USER": "alice"})
    assert cfg.node.rpc_password == "s3cret"
    assert cfg.node.rpc_user == "alice"
    assert "s3cret" not in repr(cfg.node)
    # The file wins over the environment.
    cfg = parse_config(minimal(node={"rpc_password": "fromfile"}), env={"POOL_RPC_PASSWORD": "s3cret"})
    assert cfg.node.rpc_password == "fromfile"


def test_process_environment_used_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOL_RPC_PASSWORD", "from-os-env")
    assert parse_config(minimal()).node.rpc_password == "from-os-env"


def test_input_not_mutated() -> None:
    raw = minimal(stratum={"port": 4000})
    before = repr(raw)
    parse_config(raw, env={})
    assert repr(raw) == before


def test_embedded_default() -> None:
    cfg = embedded_default(data_dir="/tmp/pool-data", port=3999)
    assert cfg.node.network == "regtest"
    assert cfg.regtest.managed is True
    assert cfg.stratum.host == "127.0.0.1" and cfg.stratum.port == 3999
    assert cfg.difficulty.start == 0.001 and cfg.difficulty.minimum == 0.0001
    assert cfg.difficulty.minimum <= cfg.difficulty.start <= cfg.difficulty.maximum
    assert cfg.payout.scheme == "pplns"
    assert cfg.data_dir == "/tmp/pool-data"
    assert cfg.ledger_file == Path("/tmp/pool-data") / "ledger.sqlite3"


def test_embedded_default_ignores_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOL_RPC_PASSWORD", "leak")
    assert embedded_default().node.rpc_password == ""


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml"):
        load_config(path)


def test_load_config_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[stratum\nport = 1\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(path)


def test_load_config_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text(f'[node]\nrpc_url = "http://127.0.0.1:18443"\nnetwork = "regtest"\n\n[payout]\npool_address = "{REGTEST_ADDR}"\n\n[stratum]\nport = 4000\n')
    cfg = load_config(path, env={"POOL_RPC_PASSWORD": "pw"})
    assert cfg.stratum.port == 4000 and cfg.node.network == "regtest"
    assert cfg.node.rpc_password == "pw"


def test_load_config_semantic_error_names_key(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text('[node]\nrpc_url = "http://127.0.0.1:8332"\n[stratum]\nport = "x"\n')
    with pytest.raises(ConfigError, match="stratum.port"):
        load_config(path, env={})


def test_example_config_uses_only_known_keys() -> None:
    if not EXAMPLE.is_file():
        pytest.skip("config/example.toml not present")
    raw = tomllib.loads(EXAMPLE.read_text())
    payout = dict(raw.get("payout", {}))
    network = raw.get("node", {}).get("network", "main")
    if not payout.get("pool_address"):
        payout["pool_address"] = MAIN_ADDR if network == "main" else regtest_address(1)
    raw["payout"] = payout
    if network not in ("main", "regtest"):
        pytest.skip(f"example uses network {network!r}")
    cfg = parse_config(raw, env={})
    assert cfg.node.network == network


def test_output_budget_per_connection() -> None:
    """``stratum.max_pending_output_bytes``: 1 MiB by default, the same in example.toml; nonsense names the key."""
    assert parse_config(minimal(), env={}).stratum.max_pending_output_bytes == 1 << 20
    assert parse_config(minimal(stratum={"max_pending_output_bytes": 4 << 20}), env={}).stratum \
        .max_pending_output_bytes == 4 << 20
    for bad in (0, 1000, 1 << 31, "1MiB"):
        assert "stratum.max_pending_output_bytes" in error_for(minimal(stratum={"max_pending_output_bytes": bad}))
    if EXAMPLE.is_file():
        assert tomllib.loads(EXAMPLE.read_text())["stratum"]["max_pending_output_bytes"] == 1 << 20


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://127.0.0.1", "tcp://127.0.0.1:", "tcp://:28332", "tcp://127.0.0.1:0", "tcp://127.0.0.1:70000",
     "tcp://127.0.0.1:port", "tcp://127.0.0.1:28332/x", "ipc://", "udp://127.0.0.1:28332", "tcp:/127.0.0.1:1"],
)
def test_zmq_endpoint_needs_host_and_port(endpoint: str) -> None:
    """libzmq refuses these only when the pool connects: caught at start-up instead, naming the key."""
    assert "node.zmq_hashblock" in error_for(minimal(node={"zmq_hashblock": endpoint}))


@pytest.mark.parametrize(
    "endpoint", ["tcp://127.0.0.1:28332", "tcp://bitcoind:28332", "tcp://[::1]:28332", "ipc:///run/bitcoind/zmq"]
)
def test_zmq_endpoint_accepted(endpoint: str) -> None:
    assert parse_config(minimal(node={"zmq_hashblock": endpoint}), env={}).node.zmq_hashblock == endpoint


def test_authorization_defaults_to_open() -> None:
    config = parse_config(minimal(), env={})
    assert config.authorization.mode == "open" and not config.authorization.enforced
    assert config.authorization.allowlist is None


def test_allowlist_mode_needs_a_file() -> None:
    with pytest.raises(ConfigError, match="authorization.allowlist_file"):
        parse_config(minimal(authorization={"mode": "allowlist"}), env={})


def test_allowlist_is_read_and_checked_against_the_network(tmp_path: Path) -> None:
    good = tmp_path / "ok.txt"
    good.write_text(f"{MAIN_ADDR}, Acme, north-dam\n")
    config = parse_config(minimal(authorization={"mode": "allowlist", "allowlist_file": str(good)}), env={})
    assert config.authorization.enforced and config.authorization.allowlist is not None
    assert config.authorization.allowlist.lookup(MAIN_ADDR).operator == "Acme"  # type: ignore[union-attr]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"# operators\n{MAIN_ADDR}\n{REGTEST_ADDR}, Wrong Chain\nnonsense\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(authorization={"mode": "allowlist", "allowlist_file": str(bad)}), env={})
    message = str(caught.value)
    assert message.startswith(f"authorization.allowlist_file {bad}: 2 bad line(s)")
    assert "line 3: " in message and "line 4: " in message and "not a valid main address" in message
    with pytest.raises(ConfigError, match="cannot read"):
        parse_config(minimal(authorization={"allowlist_file": str(tmp_path / "missing.txt")}), env={})


def test_report_efficiency_is_checked() -> None:
    assert parse_config(minimal(report={"efficiency_j_per_th": 21.5}), env={}).report.efficiency_j_per_th == 21.5
    with pytest.raises(ConfigError, match="report.efficiency_j_per_th"):
        parse_config(minimal(report={"efficiency_j_per_th": 0}), env={})
