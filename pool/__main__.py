"""Command line: ``pool run`` (embedded regtest default, or ``--config FILE`` for production)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from pool.config import Config, ConfigError, embedded_default, load_config
from pool.ops import interpreter


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pool", description="Stratum V1 Bitcoin mining pool server")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pool (without --config: embedded regtest default)")
    run.add_argument("--config", help="TOML config file (see config/example.toml)")
    run.add_argument("--data-dir", default="data", help="embedded mode: where the node, ledger and blocks live")
    run.add_argument("--port", type=int, default=3333, help="embedded mode: Stratum port on 127.0.0.1")
    run.add_argument("--metrics-port", type=int, default=9100, help="embedded mode: metrics/API port (0: any free)")
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config")

    def ledger_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML config file (its ledger is read)")
        p.add_argument("--data-dir", default="data", help="without --config: the data dir of the embedded mode")
        p.add_argument("--ledger", help="path of the SQLite ledger (overrides the above)")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    ledger_args(sub.add_parser("workers", help="shares, blocks and credits per worker"))
    ledger_args(sub.add_parser("blocks", help="found blocks and their status"))
    payouts = sub.add_parser("payouts", help="credits, payments and balances")
    ledger_args(payouts)
    payouts.add_argument("--by", choices=("address", "worker"), default="address")
    sites = sub.add_parser("sites", help="sites of the running pool: miners, hashrate, power, curtailment")
    sites.add_argument("--config", help="TOML config file (the pool's metrics.host/port are asked)")
    sites.add_argument("--url", help="the pool's HTTP API, e.g. http://127.0.0.1:9100 (overrides --config)")
    sites.add_argument("--json", action="store_true", help="machine-readable output (the /api/sites body)")
    audit = sub.add_parser("audit", help="verify or export the hash-chained audit log")
    audit.add_argument("action", choices=("verify", "export"))
    audit.add_argument("--format", choices=("csv", "json"), default="csv")
    audit.add_argument("--head", help="verify: also check that this audit hash (a report's audit_head_hash) is"
                                      " in the chain")
    ledger_args(audit)
    ledger = sub.add_parser("ledger", help="ledger maintenance")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    migrate = ledger_sub.add_parser("migrate", help="copy a SQLite ledger into an empty PostgreSQL database and"
                                    " verify the audit chain there (password: POOL_LEDGER_PASSWORD or"
                                    " --password-file)")
    migrate.add_argument("--from", dest="source", required=True, help="sqlite:PATH")
    migrate.add_argument("--to", dest="target", required=True, help="postgresql://user@host:port/db")
    migrate.add_argument("--password-file", help="file holding the PostgreSQL password")
    report = sub.add_parser("report", help="regulator's report: blocks, rewards, credits, payments, operators,"
                                           " energy per site, over a period")
    report.add_argument("--from", dest="date_from", required=True, help="YYYY-MM-DD (UTC) or ISO 8601 date-time")
    report.add_argument("--to", dest="date_to", required=True, help="YYYY-MM-DD (inclusive) or ISO 8601 date-time"
                                                                    " (exclusive)")
    report.add_argument("--site", help="only addresses of this site (the allowlist's third column)")
    report.add_argument("--format", choices=("csv", "json"), default="csv")
    report.add_argument("--allowlist", help="allowlist file for operator names and sites (default: the config's"
                                            " authorization.allowlist_file)")
    report.add_argument("--network", help="network of the --allowlist addresses without --config (default: regtest,"
                                          " as the embedded mode)")
    report.add_argument("--efficiency", type=float, help="fleet J/TH (default: the config's"
                                                         " report.efficiency_j_per_th, 30)")
    ledger_args(report)
    return parser


def _ledger_path(args: argparse.Namespace) -> object:
    """The ledger to read: ``--ledger`` (a SQLite path or a postgresql:// URL), else the config's, else the
    embedded mode's file."""
    if args.ledger:
        return args.ledger if args.ledger.startswith(("postgresql://", "postgres://")) else Path(args.ledger)
    if args.config:
        return load_config(args.config).ledger_source
    return embedded_default(args.data_dir).ledger_file


def _migrate(args: argparse.Namespace) -> int:
    from pool.ledger import pg
    from pool.ledger.schema import SchemaError
    from pool.ledger.transfer import MigrationError, migrate_sqlite_to_pg

    if not args.source.startswith("sqlite:"):
        print("pool: --from must be sqlite:PATH", file=sys.stderr)
        return 2
    if not pg.is_url(args.target):
        print("pool: --to must be a postgresql:// URL", file=sys.stderr)
        return 2
    if pg.has_password(args.target):
        print("pool: --to holds a password: give it in POOL_LEDGER_PASSWORD or --password-file", file=sys.stderr)
        return 2
    try:
        password = pg.read_password(args.password_file)
        result = migrate_sqlite_to_pg(Path(args.source[len("sqlite:"):]),
                                      pg.PgTarget(args.target, password))
    except (MigrationError, SchemaError, pg.Error, OSError) as exc:
        print(f"pool: ledger migrate failed: {pg.redact(str(exc))}", file=sys.stderr)
        return 1
    print(("pool: " if result.ok else "pool: ledger migrate failed: ") + result.message,
          file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def _regulator_report(args: argparse.Namespace) -> int:
    from pool import reports
    from pool.config import read_allowlist
    from pool.mining.allowlist import AllowlistError

    config = load_config(args.config) if args.config else None
    path = _ledger_path(args)
    try:
        period = reports.parse_period(args.date_from, args.date_to)
    except ValueError as exc:
        print(f"pool: {exc}", file=sys.stderr)
        return 2
    allowlist = config.authorization.allowlist if config is not None else None
    if args.allowlist:
        network = config.node.network if config is not None else (args.network or "regtest")
        try:
            allowlist = read_allowlist(args.allowlist, network)
        except (AllowlistError, OSError) as exc:
            print(f"pool: --allowlist: {exc}", file=sys.stderr)
            return 2
    efficiency = args.efficiency if args.efficiency is not None else (
        config.report.efficiency_j_per_th if config is not None else 30.0)
    if not efficiency > 0:
        print("pool: --efficiency must be a positive number of joules per terahash", file=sys.stderr)
        return 2
    from pool.ledger import pg

    try:
        # A site configured as [[site]] is reported at its own efficiency_j_per_th (matched by name with the
        # allowlist's site column); any other at the fleet figure.
        site_efficiency = {s.name: s.efficiency_j_per_th for s in config.programme.sites} if config else None
        report = reports.regulator_report(path, period, allowlist, efficiency, site_efficiency=site_efficiency,
                                          site=args.site)
    except (FileNotFoundError, pg.Error) as exc:
        print(f"pool: {pg.redact(str(exc))}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"pool: {exc}", file=sys.stderr)
        return 2
    print(reports.render_report(report, "json" if args.json else args.format), end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pool import reports
    from pool.ledger import pg

    if args.command == "report":
        return _regulator_report(args)
    path = _ledger_path(args)
    try:
        if args.command == "audit":
            if args.action == "verify":
                ok, message = reports.audit_verify(path, args.head)
                print(message)
                return 0 if ok else 1
            print(reports.audit_export(path, "json" if args.json else args.format))
            return 0
        table = {
            "workers": lambda: reports.workers(path),
            "blocks": lambda: reports.blocks(path),
            "payouts": lambda: reports.payouts(path, args.by),
        }[args.command]()
    except (FileNotFoundError, pg.Error) as exc:
        print(f"pool: {pg.redact(str(exc))}", file=sys.stderr)
        return 1
    print(reports.render(table, args.json))
    return 0


def _sites(args: argparse.Namespace) -> int:
    from pool.ops.sites import api_url, fetch_sites, render_sites

    url = args.url or api_url(load_config(args.config) if args.config else embedded_default())
    try:
        body = fetch_sites(url)
    except ConnectionError as exc:
        print(f"pool: {exc}", file=sys.stderr)
        return 1
    print(render_sites(body, args.json))
    return 0


def _banner(config: Config, port: int, pool_address: str, http_port: int, tls_port: int = 0,
            admin_port: int = 0) -> str:
    host = config.stratum.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    lines = [
        f"pool: Stratum listening on {host}:{port} ({config.node.network}, {config.payout.scheme})",
        f"pool: point a miner at it:  minerd -a sha256d -o stratum+tcp://{shown}:{port} -u ADDRESS.worker1 -p x",
    ]
    if tls_port:
        lines.append(f"pool: Stratum over TLS on {host}:{tls_port} (stratum+ssl://{shown}:{tls_port});"
                     " SIGHUP reloads the certificate")
    if http_port:
        lines.append(f"pool: metrics and API on http://{config.metrics_host}:{http_port}/metrics  /api/pool")
    if admin_port:
        admin_host = config.metrics_host if config.admin.port is None else config.admin.host
        lines.append(f"pool: admin API on http://{admin_host}:{admin_port}/admin/ (Authorization: Bearer TOKEN)")
    if config.regtest.managed:
        lines.append(f"pool: regtest payout address to use as ADDRESS, e.g. {pool_address}")
    lines.append("pool: Ctrl-C stops the pool")
    return "\n".join(lines)


async def _run(config: Config) -> int:
    from pool.app import PoolApp

    app = PoolApp(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.request_stop)
    # SIGHUP: re-read the Stratum TLS certificate and key (e.g. after a renewal; new connections get them) and
    # the allowlist of licensed operators (a bad file is refused and the list in force kept).
    loop.add_signal_handler(signal.SIGHUP, app.sighup)
    try:
        await app.start()
        interpreter.started()
        assert app.server is not None
        http_port = app.http.port if app.http else 0
        admin_port = app.http.admin_port if app.http else 0
        print(_banner(config, app.server.port, app.pool_address, http_port, app.server.tls_port, admin_port),
              flush=True)
        await app.run_until_stopped()
    finally:
        await app.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in ("workers", "blocks", "payouts", "audit", "report"):
            return _report(args)
        if args.command == "ledger":
            return _migrate(args)
        if args.command == "sites":
            return _sites(args)
        if args.command == "check-config":
            load_config(args.config)
            print(f"{args.config}: OK")
            return 0
        config = load_config(args.config) if args.config else embedded_default(args.data_dir, args.port, args.metrics_port)
    except ConfigError as exc:
        print(f"pool: configuration error: {exc}", file=sys.stderr)
        return 2
    from pool.ops.telemetry import configure_logging

    configure_logging(config.log_level, config.log_format)
    interpreter.tune()  # GIL switch interval and garbage collector thresholds (pool/ops/interpreter.py)
    try:
        import uvloop

        return uvloop.run(_run(config))
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        return asyncio.run(_run(config))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # start-up failures an operator must read, not a traceback
        from pool.ledger import pg
        from pool.node.regtest import BitcoindNotFound
        from pool.node.rpc import NodeError, NodeUnavailable
        from pool.server.tls import TlsError  # certificate or key changed between the config check and start

        if isinstance(exc, pg.Error):  # the PostgreSQL ledger is unreachable or refuses the login
            print(f"pool: cannot start: ledger database: {pg.redact(str(exc))}", file=sys.stderr)
            return 1
        if isinstance(exc, BitcoindNotFound | NodeUnavailable | NodeError | OSError | RuntimeError | TlsError):
            print(f"pool: cannot start: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
