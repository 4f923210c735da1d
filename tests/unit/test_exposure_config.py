"""Configuration of what the pool exposes: the admin API ([admin]), Stratum over TLS and the version mask.

Safe by default (admin off without a token, loopback admin listener) and every mistake stops start-up with one
message naming the setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pool.config import AdminConfig, ConfigError, parse_config
from tests.support.tls import make_cert

MAIN_ADDR = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
TOKEN = "x" * 16 + "-admin-token"


def minimal(**sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"node": {"rpc_url": "http://127.0.0.1:8332"}, "payout": {"pool_address": MAIN_ADDR}}
    raw.update(sections)
    return raw


def error_for(raw: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env={} if env is None else env)
    return str(info.value)


# ---- [admin] ---------------------------------------------------------------------------------------------

def test_admin_is_off_by_default() -> None:
    cfg = parse_config(minimal(), env={})
    assert cfg.admin == AdminConfig()
    assert cfg.admin.token == "" and not cfg.admin.enabled
    assert cfg.admin.host == "127.0.0.1" and cfg.admin.port is None
    assert cfg.admin.reconnect_allowlist == ()


def test_admin_token_from_file_setting_env_and_file(tmp_path: Path) -> None:
    cfg = parse_config(minimal(admin={"token": TOKEN}), env={})
    assert cfg.admin.token == TOKEN and cfg.admin.enabled
    assert TOKEN not in repr(cfg) and TOKEN not in repr(cfg.admin)

    cfg = parse_config(minimal(), env={"POOL_ADMIN_TOKEN": TOKEN})
    assert cfg.admin.token == TOKEN

    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")  # a trailing newline (echo > file) is not part of the token
    cfg = parse_config(minimal(admin={"token_file": str(token_file)}), env={"POOL_ADMIN_TOKEN": "other" * 8})
    assert cfg.admin.token == TOKEN


@pytest.mark.parametrize(
    ("admin", "key"),
    [
        ({"token": "short"}, "admin.token"),
        ({"token": TOKEN, "token_file": "/x"}, "admin.token_file"),
        ({"token_file": "/nonexistent/admin.token"}, "admin.token_file"),
        ({"token": 5}, "admin.token"),
        ({"token": TOKEN, "port": 70000}, "admin.port"),
        ({"token": TOKEN, "port": "9101"}, "admin.port"),
        ({"token": TOKEN, "reconnect_allowlist": "pool2.example.com"}, "admin.reconnect_allowlist"),
        ({"token": TOKEN, "reconnect_allowlist": ["ok.example", 5]}, "admin.reconnect_allowlist"),
        ({"token": TOKEN, "reconnect_allowlist": [""]}, "admin.reconnect_allowlist"),
        ({"token": TOKEN, "bogus": 1}, "admin.bogus"),
        ({"port": 9101}, "admin.port"),  # a separate admin listener with nothing to authenticate against
    ],
)
def test_admin_mistakes_name_the_key(admin: dict[str, Any], key: str) -> None:
    assert key in error_for(minimal(admin=admin))


def test_empty_token_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    assert "admin.token_file" in error_for(minimal(admin={"token_file": str(empty)}))


def test_weak_env_token_is_an_error() -> None:
    assert "POOL_ADMIN_TOKEN" in error_for(minimal(), env={"POOL_ADMIN_TOKEN": "abc"})


def test_admin_needs_a_listener() -> None:
    """A token with metrics off and no admin.port would leave the admin API nowhere: say so."""
    message = error_for(minimal(admin={"token": TOKEN}, metrics={"enabled": False}))
    assert "admin.port" in message


def test_admin_listener_and_allowlist_read() -> None:
    cfg = parse_config(
        minimal(admin={"token": TOKEN, "host": "127.0.0.2", "port": 9101,
                       "reconnect_allowlist": ["Pool2.Example.com", "10.0.0.2"]}),
        env={},
    )
    assert cfg.admin.host == "127.0.0.2" and cfg.admin.port == 9101
    assert cfg.admin.reconnect_allowlist == ("pool2.example.com", "10.0.0.2")


# ---- stratum.version_mask: BIP 320 general-purpose bits only ------------------------------------------------

@pytest.mark.parametrize("mask", ["1fffe000", "00ffe000", "1fff0000", "00006000", "00000000"])
def test_version_mask_within_bip320_bits(mask: str) -> None:
    assert parse_config(minimal(stratum={"version_mask": mask}), env={}).stratum.version_mask == int(mask, 16)


@pytest.mark.parametrize("mask", ["ffffffff", "3fffe000", "1ffff000", "20000000", "00001fff", "e0000000"])
def test_version_mask_outside_bip320_bits_is_refused(mask: str) -> None:
    message = error_for(minimal(stratum={"version_mask": mask}))
    assert "stratum.version_mask" in message and "1fffe000" in message


# ---- Stratum over TLS ---------------------------------------------------------------------------------------

def test_tls_off_by_default() -> None:
    cfg = parse_config(minimal(), env={})
    assert cfg.stratum.tls_port is None and cfg.stratum.tls_cert == "" and cfg.stratum.tls_key == ""


def test_tls_settings_read(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "pool")
    cfg = parse_config(minimal(stratum={"tls_port": 3334, "tls_cert": str(cert), "tls_key": str(key)}), env={})
    assert cfg.stratum.tls_port == 3334
    assert cfg.stratum.tls_cert == str(cert) and cfg.stratum.tls_key == str(key)


def test_tls_config_errors_name_the_key(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "pool")
    other_cert, other_key = make_cert(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = str(tmp_path / "missing.pem")

    def stratum(**kw: Any) -> dict[str, Any]:
        return minimal(stratum={"tls_port": 3334, **kw})

    assert "stratum.tls_cert" in error_for(stratum(tls_key=str(key)))
    assert "stratum.tls_key" in error_for(stratum(tls_cert=str(cert)))
    assert "stratum.tls_cert" in error_for(stratum(tls_cert=missing, tls_key=str(key)))
    assert "stratum.tls_key" in error_for(stratum(tls_cert=str(cert), tls_key=missing))
    assert "stratum.tls_cert" in error_for(stratum(tls_cert=str(garbage), tls_key=str(key)))
    mismatch = error_for(stratum(tls_cert=str(cert), tls_key=str(other_key)))
    assert "stratum.tls_cert" in mismatch and "stratum.tls_key" in mismatch
    assert "stratum.tls_port" in error_for(minimal(stratum={"tls_port": 70000}))
    assert "stratum.tls_port" in error_for(
        minimal(stratum={"port": 3333, "tls_port": 3333, "tls_cert": str(cert), "tls_key": str(key)})
    )
    # cert/key without a port: almost certainly a forgotten tls_port
    assert "stratum.tls_port" in error_for(minimal(stratum={"tls_cert": str(other_cert), "tls_key": str(other_key)}))


def test_unreadable_key_file_is_a_config_error(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    cert, key = make_cert(tmp_path, "pool")
    key.chmod(0)
    assert "stratum.tls_key" in error_for(minimal(stratum={"tls_port": 3334, "tls_cert": str(cert), "tls_key": str(key)}))
