"""``[[site]]`` and ``[programme]``: values read, and every mistake one ConfigError naming the setting."""

from __future__ import annotations

import ipaddress
from datetime import time
from typing import Any

import pytest

from pool.config import ConfigError, parse_config
from pool.programme.siteconfig import ProgrammeConfig


def _config(sites: list[dict[str, Any]], programme: dict[str, Any] | None = None) -> ProgrammeConfig:
    raw: dict[str, Any] = {"node": {"network": "regtest"}, "regtest": {"managed": True}, "site": sites}
    if programme is not None:
        raw["programme"] = programme
    return parse_config(raw, env={}).programme


def _site(**overrides: Any) -> dict[str, Any]:
    site: dict[str, Any] = {"name": "north", "cidrs": ["10.1.0.0/16"], "power_budget_kw": 500,
                            "efficiency_j_per_th": 21.5}
    site.update(overrides)
    return {k: v for k, v in site.items() if v is not None}


def test_no_sites_by_default():
    programme = parse_config({"node": {"network": "regtest"}, "regtest": {"managed": True}}, env={}).programme
    assert programme.sites == ()
    assert programme.silent_after_minutes == 10
    assert programme.curtail_close_rate == 20
    assert programme.resume_admit_rate == 5


def test_full_site_is_read():
    programme = _config(
        [_site(worker_prefix="n-", worker_efficiency={"s19*": 29.5, "s21*": 17.5},
               curtailment=[{"start": "17:30", "end": "06:00", "timezone": "Europe/Madrid", "days": ["Mon", "fri"]}])],
        {"silent_after_minutes": 15, "curtail_close_rate": 50, "resume_admit_rate": 2.5},
    )
    site = programme.sites[0]
    assert site.name == "north" and site.worker_prefix == "n-"
    assert site.cidrs == (ipaddress.ip_network("10.1.0.0/16"),)
    assert site.power_budget_kw == 500 and site.efficiency_j_per_th == 21.5
    assert site.worker_efficiency == (("s19*", 29.5), ("s21*", 17.5))
    window = site.curtailment[0]
    assert (window.start, window.end, window.timezone, window.days) == (time(17, 30), time(6), "Europe/Madrid",
                                                                        frozenset({0, 4}))
    assert (programme.silent_after_minutes, programme.curtail_close_rate, programme.resume_admit_rate) == (15, 50, 2.5)
    assert programme.site("north") is site and programme.site("south") is None


@pytest.mark.parametrize(
    ("site", "named"),
    [
        (_site(name="North Site"), "site[0].name"),
        (_site(name="unassigned"), "reserved"),
        (_site(cidrs=None), "needs cidrs, worker_prefix or both"),
        (_site(cidrs=["10.1.2.3/16"]), "site 'north'.cidrs"),
        (_site(cidrs=["not-a-network"]), "site 'north'.cidrs"),
        (_site(cidrs="10.0.0.0/8"), "site 'north'.cidrs"),
        (_site(power_budget_kw=None), "site 'north'.power_budget_kw is required"),
        (_site(power_budget_kw=0), "site 'north'.power_budget_kw must be between"),
        (_site(efficiency_j_per_th="fast"), "site 'north'.efficiency_j_per_th must be a number"),
        (_site(worker_efficiency={"s19*": -1}), "site 'north'.worker_efficiency.'s19*'"),
        (_site(worker_efficiency=["s19*"]), "site 'north'.worker_efficiency must be a table"),
        (_site(colour="red"), "site 'north'.colour"),
        (_site(curtailment=[{"start": "25:00", "end": "06:00", "timezone": "UTC"}]),
         "site 'north'.curtailment[0].start"),
        (_site(curtailment=[{"start": "18:00", "end": "18:00", "timezone": "UTC"}]), "needs a length"),
        (_site(curtailment=[{"start": "18:00", "end": "19:00", "timezone": "Europe/Atlantis"}]),
         "site 'north'.curtailment[0].timezone: unknown time zone 'Europe/Atlantis'"),
        (_site(curtailment=[{"start": "18:00", "end": "19:00", "timezone": "CET"}]),
         "site 'north'.curtailment[0].timezone must be an IANA time zone name"),
        (_site(curtailment=[{"start": "18:00", "end": "19:00"}]), "site 'north'.curtailment[0].timezone"),
        (_site(curtailment=[{"start": "18:00", "end": "19:00", "timezone": "UTC", "days": ["someday"]}]),
         "site 'north'.curtailment[0].days"),
        (_site(curtailment=[{"start": "18:00", "end": "19:00", "timezone": "UTC", "why": 1}]),
         "site 'north'.curtailment[0].why"),
    ],
)
def test_bad_site_names_the_setting(site: dict[str, Any], named: str):
    with pytest.raises(ConfigError, match=None) as info:
        _config([site])
    assert named in str(info.value), str(info.value)


def test_duplicate_site_names_refused():
    with pytest.raises(ConfigError, match="'north' is used twice"):
        _config([_site(), _site(cidrs=["10.2.0.0/16"])])


@pytest.mark.parametrize(
    ("programme", "named"),
    [({"silent_after_minutes": 0}, "programme.silent_after_minutes"),
     ({"curtail_close_rate": "fast"}, "programme.curtail_close_rate"),
     ({"resume_admit_rate": -1}, "programme.resume_admit_rate"),
     ({"silent": 5}, "programme.silent")],
)
def test_bad_programme_names_the_setting(programme: dict[str, Any], named: str):
    with pytest.raises(ConfigError) as info:
        _config([], programme)
    assert named in str(info.value)


def test_site_must_be_an_array_of_tables():
    with pytest.raises(ConfigError, match=r"\[\[site\]\]"):
        parse_config({"node": {"network": "regtest"}, "regtest": {"managed": True}, "site": {"name": "x"}}, env={})


def test_the_commented_example_in_example_toml_parses():
    import re
    import tomllib
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "config" / "example.toml").read_text()
    block = re.sub(r"^# (?=\S)", "", text[text.index("[programme]"):], flags=re.M)
    raw = tomllib.loads("\n".join(line for line in block.splitlines() if not line.startswith("#")))
    programme = _config(raw["site"], raw["programme"])
    assert programme.sites[0].name == "north" and programme.sites[0].curtailment[0].timezone == "Europe/Madrid"
