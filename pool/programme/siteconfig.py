"""``[[site]]`` and ``[programme]`` settings: mining sites, their power budgets and curtailment windows.

Read from the parsed TOML into frozen values; every mistake raises ``SiteConfigError`` naming the setting
(``pool.config`` turns it into its ``ConfigError``; this module does not import it, so the pure site modules
stay below the configuration layer). Time-zone names are checked against the system's zoneinfo database here,
so ``pool check-config`` catches a misspelt zone and not the first evening of curtailment.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UNASSIGNED = "unassigned"
MAX_SITES = 64  # each site is a handful of metric series; keep the label set small
MAX_CIDRS = 256
MAX_WINDOWS = 16
MAX_PATTERNS = 32
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SITE_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z")
_HHMM = re.compile(r"\A([01]\d|2[0-3]):([0-5]\d)\Z")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SiteConfigError(ValueError):
    """A site or programme setting is wrong; the message names it."""


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """A daily curtailment window in local time of ``zone``; ``end`` at or before ``start`` ends next day."""

    start: clock_time
    end: clock_time
    zone: ZoneInfo
    days: frozenset[int] = frozenset(range(7))  # weekdays (Monday 0) on which the window starts

    @property
    def timezone(self) -> str:
        return self.zone.key


@dataclass(frozen=True, slots=True)
class SiteConfig:
    name: str
    power_budget_kw: float
    efficiency_j_per_th: float
    cidrs: tuple[IpNetwork, ...] = ()
    worker_prefix: str = ""
    # (glob on the worker name, J/TH), first match wins; other workers use ``efficiency_j_per_th``.
    worker_efficiency: tuple[tuple[str, float], ...] = ()
    curtailment: tuple[DailyWindow, ...] = ()


@dataclass(frozen=True, slots=True)
class ProgrammeConfig:
    """Pool-wide settings of the sites feature."""

    sites: tuple[SiteConfig, ...] = ()
    silent_after_minutes: float = 10.0  # a worker with no accepted share for this long is silent
    curtail_close_rate: float = 20.0  # connections closed per second per site when a curtailment starts
    resume_admit_rate: float = 5.0  # miners admitted per second per site while a curtailment's end ramps up

    def site(self, name: str) -> SiteConfig | None:
        return next((s for s in self.sites if s.name == name), None)


def _number(table: dict[str, Any], key: str, where: str, default: float | None, lo: float, hi: float) -> float:
    if key not in table:
        if default is None:
            raise SiteConfigError(f"{where}.{key} is required")
        return default
    value = table.pop(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SiteConfigError(f"{where}.{key} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise SiteConfigError(f"{where}.{key} must be between {lo} and {hi}, got {value}")
    return float(value)


def _unknown(table: dict[str, Any], where: str) -> None:
    if table:
        keys = ", ".join(f"{where}.{k}" for k in sorted(table))
        raise SiteConfigError(f"unknown setting(s): {keys} (see config/example.toml)")


def _hhmm(value: Any, where: str) -> clock_time:
    match = _HHMM.match(value) if isinstance(value, str) else None
    if match is None:
        raise SiteConfigError(f"{where} must be a local time \"HH:MM\" (00:00-23:59), got {value!r}")
    return clock_time(int(match.group(1)), int(match.group(2)))


def parse_zone(name: Any, where: str) -> ZoneInfo:
    """A named IANA time zone (``Europe/Madrid``); offsets and abbreviations are refused (they ignore DST)."""
    if not isinstance(name, str) or not name or "/" not in name and name != "UTC":
        raise SiteConfigError(f"{where} must be an IANA time zone name such as \"Europe/Madrid\" or \"UTC\","
                              f" got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SiteConfigError(f"{where}: unknown time zone {name!r} (not in the system's zoneinfo database)") from exc


def _window(raw: Any, where: str) -> DailyWindow:
    if not isinstance(raw, dict):
        raise SiteConfigError(f"{where} must be a table with start, end and timezone")
    table = dict(raw)
    start = _hhmm(table.pop("start", None), f"{where}.start")
    end = _hhmm(table.pop("end", None), f"{where}.end")
    if start == end:
        raise SiteConfigError(f"{where}: start and end are both {start:%H:%M}; a window needs a length")
    zone = parse_zone(table.pop("timezone", None), f"{where}.timezone")
    days_raw = table.pop("days", list(DAY_NAMES))
    if not isinstance(days_raw, list) or not days_raw or not all(
        isinstance(d, str) and d.lower() in DAY_NAMES for d in days_raw
    ):
        raise SiteConfigError(f"{where}.days must be a non-empty list of {', '.join(DAY_NAMES)}, got {days_raw!r}")
    _unknown(table, where)
    return DailyWindow(start, end, zone, frozenset(DAY_NAMES.index(d.lower()) for d in days_raw))


def _cidrs(value: Any, where: str) -> tuple[IpNetwork, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > MAX_CIDRS:
        raise SiteConfigError(f"{where} must be a list of at most {MAX_CIDRS} networks such as \"10.1.0.0/16\"")
    networks = []
    for text in value:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=True))
        except ValueError as exc:
            raise SiteConfigError(f"{where}: {text!r} is not a network (\"10.1.0.0/16\", host bits zero): {exc}") \
                from exc
    return tuple(networks)


def _efficiencies(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(value, dict) or len(value) > MAX_PATTERNS:
        raise SiteConfigError(f"{where} must be a table of worker-name patterns to J/TH, e.g."
                              f" {{ \"s19*\" = 29.5 }} (at most {MAX_PATTERNS})")
    patterns = []
    for pattern, jth in value.items():
        if not pattern.strip():
            raise SiteConfigError(f"{where}: empty worker-name pattern")
        patterns.append((pattern, _number({"v": jth}, "v", f"{where}.{pattern!r}", None, 0.1, 10_000)))
    return tuple(patterns)


def _site(raw: Any, index: int) -> SiteConfig:
    where = f"site[{index}]"
    if not isinstance(raw, dict):
        raise SiteConfigError(f"{where} must be a table ([[site]])")
    table = dict(raw)
    name = table.pop("name", None)
    if not isinstance(name, str) or not _SITE_NAME.match(name):
        raise SiteConfigError(f"{where}.name must be 1-32 lowercase letters, digits, _ or - (a metric label),"
                              f" got {name!r}")
    if name == UNASSIGNED:
        raise SiteConfigError(f"{where}.name {UNASSIGNED!r} is reserved for miners that match no site")
    where = f"site {name!r}"
    cidrs = _cidrs(table.pop("cidrs", []), f"{where}.cidrs")
    prefix = table.pop("worker_prefix", "")
    if not isinstance(prefix, str):
        raise SiteConfigError(f"{where}.worker_prefix must be a string, got {prefix!r}")
    if not cidrs and not prefix:
        raise SiteConfigError(f"{where} needs cidrs, worker_prefix or both to know its miners")
    budget = _number(table, "power_budget_kw", where, None, 0.001, 1e7)
    efficiency = _number(table, "efficiency_j_per_th", where, None, 0.1, 10_000)
    overrides = _efficiencies(table.pop("worker_efficiency", {}), f"{where}.worker_efficiency")
    windows_raw = table.pop("curtailment", [])
    if not isinstance(windows_raw, list) or len(windows_raw) > MAX_WINDOWS:
        raise SiteConfigError(f"{where}.curtailment must be [[site.curtailment]] tables (at most {MAX_WINDOWS})")
    windows = tuple(_window(w, f"{where}.curtailment[{i}]") for i, w in enumerate(windows_raw))
    _unknown(table, where)
    return SiteConfig(name, budget, efficiency, cidrs, prefix, overrides, windows)


def parse_programme(sites_raw: Any, programme_raw: Any) -> ProgrammeConfig:
    """``[[site]]`` (a list of tables) and ``[programme]`` (a table) from the parsed TOML."""
    if not isinstance(sites_raw, list):
        raise SiteConfigError("site must be written as [[site]] tables")
    if len(sites_raw) > MAX_SITES:
        raise SiteConfigError(f"at most {MAX_SITES} [[site]] tables, got {len(sites_raw)}")
    sites = tuple(_site(raw, i) for i, raw in enumerate(sites_raw))
    names = [s.name for s in sites]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise SiteConfigError(f"site name {duplicate!r} is used twice")
    if not isinstance(programme_raw, dict):
        raise SiteConfigError("[programme] must be a table")
    table = dict(programme_raw)
    programme = ProgrammeConfig(
        sites=sites,
        silent_after_minutes=_number(table, "silent_after_minutes", "programme", 10.0, 1, 7 * 24 * 60),
        curtail_close_rate=_number(table, "curtail_close_rate", "programme", 20.0, 0.1, 100_000),
        resume_admit_rate=_number(table, "resume_admit_rate", "programme", 5.0, 0.1, 100_000),
    )
    _unknown(table, "programme")
    return programme
