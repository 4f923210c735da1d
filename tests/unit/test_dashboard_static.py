"""The dashboard's shipped files and settings: every asset is in the package data, pages carry no inline
script or handler (the CSP forbids them), and the history/dashboard settings are validated by name."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import pytest

from pool.config import ConfigError, parse_config
from pool.ops import dashboard

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "pool" / "ops" / "web"


def test_every_web_file_is_package_data_and_loadable():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pool.ops"]
    files = sorted(p.name for p in WEB.iterdir())
    for name in files:
        assert any(fnmatch(f"web/{name}", pattern) for pattern in patterns), f"{name} would not be installed"
    wanted = set(dashboard.ASSETS) | {f"{page}.html" for page in dashboard.PAGES} | {"layout.html"}
    assert wanted <= set(files)
    for name in wanted:
        assert resources.files("pool.ops").joinpath("web", name).read_bytes()


@pytest.mark.parametrize("name", sorted(p.name for p in WEB.glob("*.html")))
def test_pages_have_no_inline_script_style_or_handlers(name):
    text = (WEB / name).read_text()
    assert not re.search(r"<script(?![^>]*\ssrc=)", text), "inline <script>"
    assert not re.search(r"\son[a-z]+\s*=", text, re.I), "inline event handler"
    assert "style=" not in text and "<style" not in text
    assert "http://" not in text and "https://" not in text  # nothing from elsewhere: works offline


def test_scripts_never_write_markup():
    for name in ("dashboard.js", "chart.js"):
        text = (WEB / name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in text, f"{name} uses {sink}"


def base(**extra: object) -> dict:
    raw: dict = {"node": {"network": "regtest"}, "regtest": {"managed": True}}
    raw.update(extra)
    return raw


def test_history_and_dashboard_defaults():
    config = parse_config(base(), env={})
    assert config.history.flush_interval == 15 and config.history.minutely_keep_hours == 48
    assert config.history.hourly_keep_days == 90
    assert config.dashboard.enabled is True and config.dashboard.title == "pool"


@pytest.mark.parametrize(("extra", "message"), [
    ({"history": {"flush_interval": 0}}, "history.flush_interval"),
    ({"history": {"minutely_keep_hours": 0.5}}, "history.minutely_keep_hours"),
    ({"history": {"hourly_keep_days": 1, "minutely_keep_hours": 48}}, "history.hourly_keep_days"),
    ({"history": {"keep": 1}}, "history.keep"),
    ({"dashboard": {"enabled": "yes"}}, "dashboard.enabled"),
    ({"dashboard": {"title": ""}}, "dashboard.title"),
    ({"dashboard": {"title": "x" * 81}}, "dashboard.title"),
])
def test_bad_settings_name_the_key(extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(base(**extra), env={})
