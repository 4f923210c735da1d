"""Ops artifacts (Grafana dashboard, Prometheus config and alert rules, Dockerfile) stay true to the code.

Every metric name a dashboard panel or an alert rule queries must be one the pool exports, so a renamed
metric breaks this test instead of silently blanking a panel or disarming an alert. No network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pool.ops.telemetry import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "pool-dashboard.json"
PROMETHEUS = ROOT / "config" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

METRIC_RE = re.compile(r"\b(pool_[a-z0-9_]+|process_[a-z_]+|python_[a-z_]+)\b")

# Sample names each metric type exposes besides the family name (a labelled metric with no children yet
# has no samples, so its suffixed names are derived from its type).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": (),
    "info": ("_info",),
}


def _families() -> list[Any]:
    """The pool's metric families: the fixed ones and the per-site ones (collected at scrape time)."""
    from pool.ops.sites import SiteCollector
    from pool.programme.controller import SiteController
    from pool.programme.siteconfig import parse_programme

    programme = parse_programme([{"name": "north", "cidrs": ["10.0.0.0/8"], "power_budget_kw": 1,
                                  "efficiency_j_per_th": 20}], {})
    return [*Metrics().registry.collect(), *SiteCollector(SiteController(programme)).collect()]


@pytest.fixture(scope="module")
def exported() -> set[str]:
    names: set[str] = set()
    for family in _families():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return out


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", []) if t.get("expr")]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if var.get("type") == "query":
            exprs.append(query["query"] if isinstance(query, dict) else str(query))
    return exprs


def _metric_names(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC_RE.findall(e)}


def test_exported_names_include_suffixes(exported):
    """Sanity check of the name collection the other tests rely on."""
    for name in ("pool_shares_total", "pool_blocks_total", "pool_bitcoind_rpc_seconds_bucket",
                 "pool_event_loop_lag_seconds_count", "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "python_gc_collections_total", "pool_template_age_seconds"):
        assert name in exported, name


def test_metric_names_follow_prometheus_conventions():
    base_units = ("_seconds", "_bytes", "_satoshis", "_hashes_per_second", "_total", "_size")
    for family in _families():
        if not family.name.startswith("pool_"):
            continue
        if family.type == "counter":
            # prometheus_client strips _total from the family name and adds it back to the sample
            assert not family.name.endswith("_total"), family.name
        assert not re.search(r"_(ms|milliseconds|kb|mb|minutes|hours)(_|$)", family.name), family.name
        if "latency" in family.documentation.lower() or "time from" in family.documentation.lower():
            assert family.name.endswith(base_units), family.name


# ---- Grafana dashboard --------------------------------------------------------------------------------


def test_dashboard_is_importable_json(dashboard):
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard.get("id") is None  # an exported dashboard carries no instance id
    inputs = {i["name"]: i for i in dashboard.get("__inputs", [])}
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    ds_input = inputs.get("DS_PROMETHEUS")
    ds_var = next((v for v in variables.values() if v.get("type") == "datasource"), None)
    assert ds_input is not None or ds_var is not None
    if ds_input is not None:
        assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]:
            assert ds is not None, panel["title"]
            assert ds["type"] == "prometheus", panel["title"]
            assert ds["uid"] in ("${DS_PROMETHEUS}", "$DS_PROMETHEUS") or (
                ds_var is not None and ds["uid"] in (f"${{{ds_var['name']}}}", f"${ds_var['name']}")
            ), (panel["title"], ds)
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_queries_only_exported_metrics(dashboard, exported):
    exprs = _exprs(dashboard)
    assert len(exprs) >= 20
    used = _metric_names(exprs)
    assert used, "no metric names found in the dashboard"
    missing = sorted(used - exported)
    assert not missing, f"dashboard queries metrics the pool does not export: {missing}"


def test_dashboard_queries_are_balanced(dashboard):
    for expr in _exprs(dashboard):
        for open_, close in ("()", "{}", "[]"):
            assert expr.count(open_) == expr.count(close), expr
        assert expr.count('"') % 2 == 0, expr


PANEL_KEYWORDS = {
    "pool hashrate": ("hashrate",),
    "workers active": ("workers active",),
    "connections / sessions": ("connection", "session"),
    "top workers hashrate": ("top workers",),
    "workers' last share age": ("last share age",),
    "shares accepted/rejected": ("shares accepted", "rejected"),
    "rejects by reason": ("rejects by reason",),
    "blocks by stage": ("blocks",),
    "bitcoind up": ("bitcoind up",),
    "rpc latency": ("rpc latency",),
    "rpc errors": ("rpc errors",),
    "template age": ("template age",),
    "new tip to notify": ("new tip",),
    "share to submit": ("share-to-submit",),
    "ledger commit latency": ("ledger commit",),
    "ledger batch size": ("ledger batch",),
    "event loop lag": ("event loop",),
    "process cpu": ("cpu",),
    "process memory": ("memory",),
}


def test_dashboard_has_expected_panels(dashboard):
    titles = [p["title"].lower() for p in _panels(dashboard) if p["type"] != "row"]
    for what, keywords in PANEL_KEYWORDS.items():
        assert any(all(k in t for k in keywords) for t in titles), f"no panel for {what}: {titles}"


def test_dashboard_panels_query_the_right_things(dashboard):
    def exprs_of(keyword: str) -> str:
        return " ".join(
            t["expr"] for p in _panels(dashboard) if keyword in p["title"].lower() for t in p.get("targets", [])
        )

    hashrate = exprs_of("pool hashrate")
    assert "rate(pool_accepted_difficulty_total" in hashrate and "4294967296" in hashrate
    assert "pool_hashrate_hashes_per_second" in hashrate
    assert "topk(" in exprs_of("top workers") and "pool_worker_hashrate_hashes_per_second" in exprs_of("top workers")
    assert "pool_worker_last_share_age_seconds" in exprs_of("last share age")
    assert "pool_sessions" in exprs_of("sessions") and "pool_connections" in exprs_of("connections")
    assert "pool_share_rejects_total" in exprs_of("rejects by reason")
    assert "pool_shares_total" in exprs_of("shares accepted")
    blocks = exprs_of("blocks found")
    for stage in ("found", "accepted", "confirmed", "orphaned"):
        assert stage in blocks, stage
    assert "pool_blocks_total" in blocks
    for keyword, metric in (("rpc latency", "pool_bitcoind_rpc_seconds_bucket"),
                            ("new tip", "pool_new_tip_notify_seconds_bucket"),
                            ("share-to-submit", "pool_block_share_to_submit_seconds_bucket"),
                            ("ledger commit", "pool_ledger_commit_seconds_bucket"),
                            ("ledger batch", "pool_ledger_batch_size_bucket"),
                            ("event loop", "pool_event_loop_lag_seconds_bucket")):
        text = exprs_of(keyword)
        assert "histogram_quantile(" in text and metric in text and "le" in text, keyword
    assert "by (le, method)" in exprs_of("rpc latency")
    assert "pool_bitcoind_rpc_errors_total" in exprs_of("rpc errors")
    assert "pool_bitcoind_up" in exprs_of("bitcoind up")
    assert "process_cpu_seconds_total" in exprs_of("cpu")
    assert "process_resident_memory_bytes" in exprs_of("memory")


# ---- Prometheus config and alert rules ----------------------------------------------------------------


def _yaml(path: Path) -> Any | None:
    try:
        import yaml
    except ImportError:
        return None
    return yaml.safe_load(path.read_text())


def _alert_rules(text: str) -> dict[str, dict[str, str]]:
    """Alert rules by name, read with regexes (PyYAML is not a dependency): expr, for, severity, annotations."""
    rules: dict[str, dict[str, str]] = {}
    chunks = re.split(r"^\s*- alert:\s*", text, flags=re.M)[1:]
    for chunk in chunks:
        name = chunk.split("\n", 1)[0].strip()
        fields = {}
        for key in ("expr", "for", "severity", "summary", "description"):
            m = re.search(rf"^\s*{key}:\s*(.+)$", chunk, flags=re.M)
            if m:
                fields[key] = m.group(1).strip().strip('"')
        rules[name] = fields
    return rules


REQUIRED_ALERTS = ("BitcoindDown", "NoFreshWork", "BlockSubmitFailed", "RejectRateHigh", "HashrateDrop", "PoolDown")


def test_alert_rules_present_and_complete():
    text = ALERTS.read_text()
    assert "\t" not in text, "YAML must not contain tabs"
    rules = _alert_rules(text)
    for name in REQUIRED_ALERTS:
        assert name in rules, name
    for name, fields in rules.items():
        for key in ("expr", "severity", "summary", "description"):
            assert fields.get(key), (name, key)
        assert fields["severity"] in ("critical", "warning", "info"), name
        assert not fields["expr"].endswith(("|", ">")), f"{name}: keep expr on one line"
        for open_, close in ("()", "{}", "[]"):
            assert fields["expr"].count(open_) == fields["expr"].count(close), name
    assert rules["BitcoindDown"]["expr"] == "pool_bitcoind_up == 0"
    assert rules["BitcoindDown"]["for"] == "1m"
    assert re.fullmatch(r"pool_template_age_seconds > 120", rules["NoFreshWork"]["expr"])
    assert 'increase(pool_blocks_total{stage="rejected"}[1h]) > 0' in rules["BlockSubmitFailed"]["expr"]
    reject = rules["RejectRateHigh"]["expr"]
    assert 'pool_shares_total{result="rejected"}' in reject and "[10m]" in reject and "0.05" in reject
    drop = rules["HashrateDrop"]["expr"]
    assert "offset 1h" in drop and "0.5" in drop and "pool_accepted_difficulty_total" in drop
    assert re.search(r"\bup\b.*== 0", rules["PoolDown"]["expr"])
    assert rules["SiteWorkersSilent"]["expr"] == "pool_site_silent_workers > 0"  # one alert per site label
    assert "pool_site_power_budget_ratio" in rules["SitePowerOverBudget"]["expr"]
    assert "pool_site_curtailed == 1" in rules["SiteCurtailmentNotShedding"]["expr"]


def test_dashboard_has_a_row_per_site(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "pool_site_" in variables["site"]["query"]["query"] and variables["site"]["multi"]
    rows = [p for p in dashboard["panels"] if p["type"] == "row" and p.get("repeat") == "site"]
    assert len(rows) == 1
    power = " ".join(t["expr"] for p in _panels(dashboard) if "power against budget" in p["title"].lower()
                     for t in p["targets"])
    assert "pool_site_power_watts" in power and "pool_site_power_budget_watts" in power and '$site' in power


def test_alert_rules_query_only_exported_metrics(exported):
    rules = _alert_rules(ALERTS.read_text())
    used = _metric_names([r["expr"] for r in rules.values()])
    assert used
    missing = sorted(used - exported)
    assert not missing, f"alert rules query metrics the pool does not export: {missing}"


def test_alert_rules_with_yaml_when_available(exported):
    data = _yaml(ALERTS)
    if data is None:
        pytest.skip("PyYAML not installed; the regex reading above covers the rules")
    rules = [r for g in data["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= set(REQUIRED_ALERTS)
    for rule in rules:
        assert rule["labels"]["severity"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert not set(METRIC_RE.findall(rule["expr"])) - exported, rule["alert"]


def test_prometheus_config_scrapes_pool_and_loads_rules():
    text = PROMETHEUS.read_text()
    assert "\t" not in text
    assert re.search(r"^rule_files:\s*\n\s*-\s*alerts\.yml\s*$", text, flags=re.M)
    assert re.search(r"job_name:\s*pool\b", text)
    assert "127.0.0.1:9100" in text
    data = _yaml(PROMETHEUS)
    if data is not None:
        assert data["rule_files"] == ["alerts.yml"]
        job = next(j for j in data["scrape_configs"] if j["job_name"] == "pool")
        assert "127.0.0.1:9100" in job["static_configs"][0]["targets"]
    # PoolDown watches the job this file defines
    assert 'job="pool"' in _alert_rules(ALERTS.read_text())["PoolDown"]["expr"]


# ---- Dockerfile ---------------------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_multistage_non_root_with_healthcheck():
    instr = _instructions(DOCKERFILE.read_text())
    froms = [rest for word, rest in instr if word == "FROM"]
    assert len(froms) >= 2 and all(f.startswith("python:3.11-slim") for f in froms)
    assert re.search(r"\bAS builder\b", froms[0], flags=re.I)
    runs = " ".join(rest for word, rest in instr if word == "RUN")
    assert "gcc" in runs and "pip wheel" in runs and "--no-deps" in runs
    assert "useradd" in runs
    # the runtime stage runs as the pool user, never root
    last_stage = instr[max(i for i, (w, _) in enumerate(instr) if w == "FROM"):]
    users = [rest for word, rest in last_stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0] == "pool"
    exposed = {p for word, rest in instr if word == "EXPOSE" for p in rest.split()}
    assert {"3333", "9100"} <= {p.split("/")[0] for p in exposed}
    health = [rest for word, rest in instr if word == "HEALTHCHECK"]
    assert health and "http://127.0.0.1:9100/healthz" in health[0] and "urllib" in health[0]
    assert ("WORKDIR", "/var/lib/pool") in last_stage
    entry = [rest for word, rest in instr if word == "ENTRYPOINT"]
    cmd = [rest for word, rest in instr if word == "CMD"]
    assert entry and json.loads(entry[-1]) == ["pool"]
    assert cmd and json.loads(cmd[-1]) == ["run", "--config", "/etc/pool/pool.toml"]


def test_dockerfile_copies_what_the_wheel_needs_and_dockerignore_keeps_it():
    text = DOCKERFILE.read_text()
    for needed in ("pyproject.toml", "setup.py", "README.md", "pool"):
        assert re.search(rf"^COPY .*\b{re.escape(needed)}\b", text, flags=re.M), needed
    ignored = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for must in (".venv", "data", "build", ".git"):
        assert must in ignored, must
    assert any("__pycache__" in p for p in ignored)
    for kept in ("pool", "pyproject.toml", "setup.py", "README.md"):
        assert kept not in ignored, kept
