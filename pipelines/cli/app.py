"""`stackai-runs`: the command line. Thin: parse flags, run the sync or the simulator, exit.

Exit codes: 0 every flow synced; 1 at least one flow failed (the others still loaded);
2 usage or configuration error.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from pipelines.cli import console

# dlt, duckdb, pyarrow, sqlglot and pendulum take over a second to import: each command imports
# what it uses, so `--help` and usage errors answer at once (tests/test_startup.py).
if TYPE_CHECKING:
    from pipelines.load.destination import DestinationChoice
    from pipelines.settings import SyncSettings

EXIT_OK, EXIT_FLOW_FAILED, EXIT_USAGE = 0, 1, 2
DEMO_DUCKDB_PATH = "stackai_demo.duckdb"
DEMO_FLOWS = 6
SIMULATED_NEW_FLOWS = 0.5
"""New flows per org per hour of `simulate --tick`'s clock."""
DEMO_MARKER_TABLE = "stackai._stackai_runs_demo"

log = logging.getLogger(__name__)

app = typer.Typer(
    name="stackai-runs",
    help="Sync StackAI flow runs into DuckDB, incrementally; or run the API simulator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail_usage(message: str) -> typer.Exit:
    console.stderr.print(f"[red]error[/]: {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


EXTRAS = {"simulator": ("fastapi", "uvicorn"), "chart": ("matplotlib",)}
"""What each optional part needs (pyproject.toml's extras); a production install has neither."""


def _require_extra(extra: str, what: str) -> None:
    """Exit 2 with one line naming the extra to install when its packages are missing."""
    from importlib.util import find_spec

    missing = [name for name in EXTRAS[extra] if find_spec(name) is None]
    if missing:
        raise _fail_usage(
            f"{what} needs the [{extra}] extra ({', '.join(missing)} not installed):"
            f" pip install 'stackai-runs[{extra}]'"
        )


def _sync_and_report(
    settings: SyncSettings, quiet: bool, fail_on_rejected: bool = False, as_json: bool = False
) -> int:
    from pipelines.cli import signals
    from pipelines.load import DestinationUnreachable, DuckDBPathError, SyncLocked, run_sync
    from pipelines.stackai.progress import SyncReport

    report = SyncReport()
    signals.watch(report)
    try:
        with console.live_progress(enabled=not quiet and not as_json) as on_progress:
            run_sync(settings, on_progress=on_progress, report=report)
    except (SyncLocked, DestinationUnreachable) as exc:
        console.stderr.print(f"[red]error[/]: {escape(str(exc))}", highlight=False, soft_wrap=True)
        if as_json:
            console.print_json_summary(None, error=str(exc))
        return EXIT_FLOW_FAILED
    except DuckDBPathError as exc:
        console.stderr.print(f"[red]error[/]: {escape(str(exc))}", highlight=False, soft_wrap=True)
        if as_json:
            console.print_json_summary(None, error=str(exc))
        return EXIT_USAGE
    except (KeyboardInterrupt, signals.Interrupted) as exc:
        console.stderr.print(
            f"interrupted ({signals.describe(exc)}): nothing partial was committed; the next"
            " sync finishes what was pending",
            highlight=False,
            soft_wrap=True,
        )
        return signals.exit_code(exc)
    finally:
        signals.watch(None)
    if signals.received is not None:
        stopped = [f for f in report.flows.values() if f.status == "failed"]
        done = len(report.flows) - len(stopped)
        if as_json:
            console.print_json_summary(report)
        if stopped:
            said = (
                f"{done} flows finished and were committed; {len(stopped)} stopped before"
                " finishing (their cursors did not move: the next sync reads them again)"
            )
        else:
            said = f"it came as the load ended: all {done} flows finished and were committed"
        console.stderr.print(
            f"interrupted ({signals.describe(signals.received)}): {said}",
            highlight=False,
            soft_wrap=True,
        )
        return 128 + signals.received
    failed = not report.ok or (fail_on_rejected and report.rejected > 0)
    if as_json:
        console.print_json_summary(report)
    elif not quiet or failed or report.rejected:
        console.print_sync_summary(report)
    return EXIT_FLOW_FAILED if failed else EXIT_OK


@app.command()
def sync(
    flow: Annotated[
        list[str] | None,
        typer.Option(
            "--flow",
            metavar="ORG_ID/FLOW_ID",
            help="Sync only this flow (repeatable; with --org, these and the org's flows)."
            " Default: flows and orgs of sources.stackai in .dlt/config.toml.",
        ),
    ] = None,
    org: Annotated[
        list[str] | None,
        typer.Option(
            "--org",
            metavar="ORG_ID",
            help="Also sync every flow the org summary lists for this org (repeatable)."
            " Default: orgs in config.",
        ),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="API root. Default: base_url in config.")
    ] = None,
    duckdb_path: Annotated[
        str | None,
        typer.Option("--duckdb", metavar="PATH", help="DuckDB file. Default: stackai_runs.duckdb"),
    ] = None,
    destination: Annotated[
        str | None,
        typer.Option(
            "--destination",
            metavar="NAME",
            help="Where to load: duckdb (default), postgres, motherduck, bigquery or snowflake;"
            " credentials are dlt's [destination.NAME] credentials. Default: destination in"
            " config.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="ISO8601",
            help="Re-read runs from this date-time (UTC if no offset); cursors never move back.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", metavar="ISO8601", help="End of a --since backfill window."),
    ] = None,
    page_size: Annotated[
        int | None, typer.Option("--page-size", min=1, help="Runs per request.")
    ] = None,
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh",
            help="Drop what is stored for the selected flows (rows and state) and reload them.",
        ),
    ] = False,
    fail_on_rejected: Annotated[
        bool,
        typer.Option(
            "--fail-on-rejected",
            help="Exit 1 when records were rejected (they are kept in flow_runs_rejected).",
        ),
    ] = False,
    allow_insecure_http: Annotated[
        bool,
        typer.Option(
            "--allow-insecure-http",
            help="Allow a plain http:// base URL to a non-loopback host (the key travels"
            " unencrypted).",
        ),
    ] = False,
    sql_dir: Annotated[
        str | None,
        typer.Option(
            "--sql-dir",
            metavar="DIR",
            help="A folder of your own NNN_<view>.sql files, applied after the shipped views."
            " Default: sql_dir in config.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print a machine-readable summary on stdout (for monitoring)."),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Warnings and failures only (for cron).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Sync the configured flows' runs into the destination (stackai.flow_runs, merge on run_id)."""
    from pipelines.settings import ConfigError, load_settings

    console.setup_logging(quiet=quiet, verbose=verbose)
    if until is not None and since is None:
        raise _fail_usage("--until needs --since")
    try:
        settings = load_settings(
            flows=flow,
            orgs=org,
            base_url=base_url,
            duckdb_path=duckdb_path,
            page_size=page_size,
            since=since,
            until=until,
            full_refresh=full_refresh,
            allow_insecure_http=allow_insecure_http,
            sql_dir=sql_dir,
            destination=destination,
        )
    except ConfigError as exc:
        if as_json:
            console.print_json_summary(None, error=str(exc))
        raise _fail_usage(str(exc)) from None
    raise typer.Exit(_sync_and_report(settings, quiet, fail_on_rejected, as_json))


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0 picks a free one).")] = 8765,
    seed: Annotated[int, typer.Option(help="Seed of the generated run history.")] = 0,
    fault_rate: Annotated[
        float | None,
        typer.Option(
            "--fault-rate",
            min=0.0,
            max=1.0,
            help="Share of flow-run requests that get a random (seeded) fault; 0 = none."
            " Default: 1 (every request) with --fault, else 0.",
        ),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            metavar="KIND[:PARAM]",
            help="A fault --fault-rate draws from (repeatable): status[:CODE], slow[:SECONDS],"
            " truncated, reset, html, object, bad_json, wrong_content_type, records."
            " Default: status:429, status:503, slow:0.2.",
        ),
    ] = None,
    tick: Annotated[
        float,
        typer.Option(
            "--tick",
            min=0.0,
            metavar="SECONDS",
            help="Move the simulator's clock with real time every SECONDS (new runs arrive,"
            " open runs finish, feedback is added); 0 = a frozen clock.",
        ),
    ] = 0.0,
    concurrency_limit: Annotated[
        int | None,
        typer.Option(
            "--concurrency-limit",
            min=1,
            metavar="N",
            help="Serve N flow-run requests at once and answer 429 to any arriving above them,"
            " as a rate-limited API does (watch a sync's adaptive concurrency back off)."
            " Default: no limit.",
        ),
    ] = None,
    retry_after: Annotated[
        float | None,
        typer.Option(
            "--retry-after",
            min=0.0,
            metavar="SECONDS",
            help="With --concurrency-limit: the Retry-After header of its 429s. Default: none.",
        ),
    ] = None,
) -> None:
    """Serve the StackAI analytics API simulator in the foreground (Ctrl-C stops it)."""
    import socket

    _require_extra("simulator", "the simulator")
    from pipelines.simulator import World
    from pipelines.simulator.server import serve_forever

    console.setup_logging()
    if fault_rate is None:
        fault_rate = 1.0 if fault else 0.0  # asking for a fault means wanting to see it
    chaos = {"fault_rate": fault_rate} | ({"fault_kinds": tuple(fault)} if fault else {})
    if retry_after is not None and concurrency_limit is None:
        raise _fail_usage("--retry-after needs --concurrency-limit (only its 429s carry it)")
    limit = {"concurrency_limit": concurrency_limit, "rate_limit_retry_after": retry_after}
    try:
        world = World(seed=seed, **chaos, **limit)
    except ValueError as exc:
        raise _fail_usage(str(exc)) from None
    if fault_rate > 0 or fault:
        console.stdout.print(
            f"Faults: {fault_rate * 100:g}% of flow-run requests get one of"
            f" {', '.join(world.fault_kinds)} (seed {seed})",
            highlight=False,
        )
    if concurrency_limit is not None:
        after = "" if retry_after is None else f", Retry-After: {retry_after:g} s"
        console.stdout.print(
            f"Rate limit: {concurrency_limit} flow-run requests at once, 429 above{after}",
            highlight=False,
        )
    try:
        # Binding first turns a busy port into one line instead of a server traceback.
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise _fail_usage(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if tick > 0:
        _start_clock(world, tick)
    from pipelines.cli import signals

    signals.uninstall()  # uvicorn stops on Ctrl-C / SIGTERM itself; stopping is the intent
    serve_forever(world, host=host, port=port, announce=_announce_simulator)


def _start_clock(world: object, every: float) -> None:
    """Advance the world with real time, in the background, every `every` seconds."""
    import threading
    import time

    def run() -> None:
        last = time.monotonic()
        while True:
            time.sleep(every)
            now = time.monotonic()
            # new flows now and then, so discovery can be watched too
            world.advance(  # type: ignore[attr-defined]
                now - last, late_feedback=True, new_flows_per_hour=SIMULATED_NEW_FLOWS
            )
            last = now

    threading.Thread(target=run, name="simulator-clock", daemon=True).start()


def _announce_simulator(url: str, world: object) -> None:
    out = console.stdout
    out.print(f"StackAI simulator listening on {url}", highlight=False)
    out.print(f"API key for every org: {world.api_key}", highlight=False)  # type: ignore[attr-defined]
    for org_id, key in world.org_api_keys.items():  # type: ignore[attr-defined]
        out.print(f"org {org_id}: API key {key}", highlight=False)
        for info in world.flows():  # type: ignore[attr-defined]
            if info.org_id == org_id:
                out.print(f"  flow: {info.org_id}/{info.flow_id}  ({info.name})", highlight=False)
    out.print(
        f"Try: STACKAI_API_KEY=<the org's key> stackai-runs sync --base-url {url} --org ORG_ID"
        " (every flow of the org), or --flow ORG_ID/FLOW_ID",
        highlight=False,
        soft_wrap=True,
    )


def _prepare_demo_file(path: Path) -> None:
    """Start the demo from an empty file, but never replace a file the demo did not write."""
    if not path.exists():
        return
    import duckdb

    from pipelines.load import pipelines_dir_for

    try:
        with duckdb.connect(str(path), read_only=True) as con:
            marker = con.execute(
                "select count(*) from information_schema.tables"
                " where table_schema = 'stackai' and table_name = '_stackai_runs_demo'"
            ).fetchone()[0]
    except duckdb.Error as exc:
        raise _fail_usage(f"{path} exists and is not a readable DuckDB file: {exc}") from None
    if not marker:
        raise _fail_usage(
            f"{path} exists and was not written by the demo; pass another --duckdb PATH"
        )
    path.unlink()
    Path(f"{path}.wal").unlink(missing_ok=True)
    shutil.rmtree(pipelines_dir_for(path), ignore_errors=True)


@app.command()
def demo(
    duckdb_path: Annotated[
        str, typer.Option("--duckdb", metavar="PATH", help="DuckDB file the demo (re)writes.")
    ] = DEMO_DUCKDB_PATH,
    seed: Annotated[int, typer.Option(help="Seed of the simulator's run history.")] = 0,
) -> None:
    """Start the simulator on a free loopback port, sync all its flows, summarise the result."""
    import shlex
    import sys

    _require_extra("simulator", "the demo")
    _configured("sources.stackai.lookback")  # a .dlt/*.toml here that does not parse: one line
    import duckdb

    from pipelines.settings import SyncSettings
    from pipelines.simulator import SimulatorServer, World

    console.setup_logging()
    path = Path(duckdb_path).expanduser().resolve()
    _prepare_demo_file(path)
    # One org, as one API key sees it: the sync discovers its flows from the org summary.
    with SimulatorServer(World(seed=seed, orgs=1, flows_per_org=DEMO_FLOWS)) as server:
        world = server.world
        (org_id, api_key), *_ = world.org_api_keys.items()
        console.stdout.print(
            f"Simulator on {server.url} serving org {org_id} with {len(world.flows())} flows",
            highlight=False,
        )
        settings = SyncSettings(
            base_url=server.url,
            api_key=api_key,
            flows=(),
            orgs=(org_id,),
            duckdb_path=path,
        )
        code = _sync_and_report(settings, quiet=False)
    if code == EXIT_OK:
        with duckdb.connect(str(path)) as con:
            con.execute(f"create table if not exists {DEMO_MARKER_TABLE} (written_by text)")
        from pipelines.analysis import report as reporting

        with reporting.open_read_only(path) as con:
            reporting.print_report(reporting.build_report(con, source=str(path)), console.stdout)
        # The interpreter running the tool has duckdb: `.venv/bin/python` from a clone, the
        # tool's own environment when installed with pipx or from a wheel.
        python = Path(sys.executable)
        if python.is_relative_to(Path.cwd()):
            python = python.relative_to(Path.cwd())
        console.stdout.print(
            "\nQuery it from Python (or with the DuckDB CLI, installed separately):\n"
            f"{shlex.quote(str(python))} -c \"import duckdb; print(duckdb.connect('{path}',"
            " read_only=True).sql('select state, count(*) from stackai.runs group by state'))\"",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(code)


VIEWS_LOCK_WAIT_SECONDS = 300.0
"""How long `views` waits for a running sync of the same file: replacing views while dlt loads
would make the load fail on DuckDB's file lock."""


def _configured(key: str) -> str | None:
    """A configuration value (dlt's providers), or exit 2 naming a `.dlt/*.toml` that does not
    parse."""
    import dlt

    from pipelines.stackai.config import ConfigError, register_key_environment

    try:
        register_key_environment()
    except ConfigError as exc:
        raise _fail_usage(str(exc)) from None
    return dlt.config.get(key, str)


def _existing_duckdb_file(duckdb_path: str | None) -> Path:
    """The DuckDB file the flag or `[destination.duckdb] credentials` names; it must exist
    (connecting would create an empty one)."""
    from pipelines.settings import DEFAULT_DUCKDB_PATH

    configured = duckdb_path or _configured("destination.duckdb.credentials")
    path = Path(configured or DEFAULT_DUCKDB_PATH).expanduser().resolve()
    if not path.is_file():
        raise _fail_usage(
            f"no DuckDB file at {path}: sync first (stackai-runs sync --duckdb {path}),"
            " or pass --duckdb PATH"
        )
    return path


def _server_destination(destination: str | None) -> DestinationChoice | None:
    """The destination `--destination` or `[sources.stackai] destination` names, when it is
    not a DuckDB file (None then); exit 2 for an unknown name or missing credentials."""
    from pipelines.load.destination import choose
    from pipelines.stackai.config import ConfigError

    if destination is not None and not destination.strip():
        raise _fail_usage("--destination is empty (an unset variable in a crontab?)")
    name = destination or _configured("sources.stackai.destination")
    if not name or name.strip().lower() == "duckdb":
        return None
    try:
        return choose(name)
    except ConfigError as exc:
        raise _fail_usage(str(exc)) from None


DESTINATION_OPTION = typer.Option(
    "--destination",
    metavar="NAME",
    help="Where the data is: duckdb (default), postgres, motherduck, bigquery or snowflake."
    " Default: destination in config.",
)


@app.command()
def views(
    duckdb_path: Annotated[
        str | None,
        typer.Option("--duckdb", metavar="PATH", help="DuckDB file. Default: stackai_runs.duckdb"),
    ] = None,
    destination: Annotated[str | None, DESTINATION_OPTION] = None,
    sql_dir: Annotated[
        Path | None,
        typer.Option(
            "--sql-dir",
            metavar="DIR",
            help="A folder of your own NNN_<view>.sql files, applied after the shipped views."
            " Default: sql_dir in config.",
        ),
    ] = None,
) -> None:
    """Create or replace the analysis views (shipped, then your own; schema stackai)."""
    import duckdb

    from pipelines.analysis.views import SourceTablesMissing, ViewError, create_views
    from pipelines.load import (
        DestinationUnreachable,
        SyncLocked,
        lock_for,
        open_pipeline,
        sync_lock,
    )

    server = _server_destination(destination)
    path = None if server else _existing_duckdb_file(duckdb_path)
    where = server.describe() if server else str(path)
    if sql_dir is None:
        configured = _configured("sources.stackai.sql_dir")
        sql_dir = Path(configured).expanduser() if configured else None
    try:
        if server is not None:
            with lock_for(server, VIEWS_LOCK_WAIT_SECONDS):
                created = create_views(open_pipeline(server), sql_dir=sql_dir)
        else:
            with sync_lock(path, VIEWS_LOCK_WAIT_SECONDS):
                created = create_views(path, sql_dir=sql_dir)
    except SourceTablesMissing as exc:
        flag = f"--destination {server.name}" if server else f"--duckdb {path}"
        console.stderr.print(
            f"[red]error[/]: {escape(where)}: {escape(str(exc))}"
            f" (stackai-runs sync {escape(flag)})",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FLOW_FAILED) from None
    except (ViewError, SyncLocked, DestinationUnreachable, duckdb.Error) as exc:
        console.stderr.print(f"[red]error[/]: {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FLOW_FAILED) from None
    except OSError as exc:  # the lock file beside the DuckDB file, in a read-only folder
        raise _fail_usage(
            f"cannot create the lock file beside {where}: {exc.strerror or exc}"
        ) from None
    except Exception as exc:  # the destination refused (dlt's errors), one line
        console.stderr.print(
            f"[red]error[/]: {escape(where)}: {escape(_first_line(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FLOW_FAILED) from None
    console.stdout.print(
        f"{len(created)} views created or replaced in {where}: {', '.join(created)}",
        highlight=False,
        soft_wrap=True,
    )


def _first_line(exc: BaseException) -> str:
    from pipelines.stackai.http import redact

    cause = exc.__cause__ or exc
    text = str(cause).strip()
    return redact(f"{type(cause).__name__}: {text.splitlines()[0] if text else ''}")


@app.command()
def report(
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="ISO8601",
            help="Only runs started from this UTC day (2026-11-01) or instant"
            " (2026-11-01T12:00:00Z; UTC if no offset) on.",
        ),
    ] = None,
    flow: Annotated[
        str | None, typer.Option("--flow", metavar="ORG_ID/FLOW_ID", help="Only this flow.")
    ] = None,
    duckdb_path: Annotated[
        str | None,
        typer.Option("--duckdb", metavar="PATH", help="DuckDB file. Default: stackai_runs.duckdb"),
    ] = None,
    destination: Annotated[str | None, DESTINATION_OPTION] = None,
    chart: Annotated[
        Path | None,
        typer.Option(
            "--chart",
            metavar="FILE.png",
            help="Also write a PNG of daily runs, failures, p95 latency and cost per flow.",
        ),
    ] = None,
) -> None:
    """Summarise the runs from the views: per flow, top failures, models, users (read-only)."""
    import duckdb

    from pipelines.analysis import report as reporting
    from pipelines.load import DestinationUnreachable, open_pipeline
    from pipelines.stackai.config import ConfigError, parse_instant
    from pipelines.stackai.flows import FlowRef

    since_value = _parse_since(since, parse_instant, ConfigError)
    try:
        selected = FlowRef.parse(flow) if flow else None
    except ValueError as exc:
        raise _fail_usage(f"--flow: {exc}") from None
    if chart is not None:
        _require_extra("chart", "--chart")
    server = _server_destination(destination)
    path = None if server else _existing_duckdb_file(duckdb_path)
    try:
        if server is not None:
            with reporting.open_destination(open_pipeline(server), server.describe()) as client:
                data = reporting.build_report(client, since_value, selected, server.describe())
        else:
            assert path is not None
            with reporting.open_read_only(path) as con:
                data = reporting.build_report(con, since_value, selected, source=str(path))
    except (reporting.ReportError, DestinationUnreachable, duckdb.Error) as exc:
        console.stderr.print(f"[red]error[/]: {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FLOW_FAILED) from None
    except Exception as exc:  # the destination refused (dlt's errors), one line
        where = server.describe() if server else str(path)
        console.stderr.print(
            f"[red]error[/]: {escape(where)}: {escape(_first_line(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FLOW_FAILED) from None
    reporting.print_report(data, console.stdout)
    if chart is not None:
        try:
            reporting.write_chart(data, chart)
        except reporting.EmptyChart as exc:
            console.stdout.print(str(exc), highlight=False, soft_wrap=True)
            return
        except OSError as exc:
            raise _fail_usage(f"cannot write the chart {chart}: {exc}") from None
        console.stdout.print(f"chart written to {chart}", highlight=False, soft_wrap=True)


def _parse_since(since: str | None, parse_instant: Any, config_error: type) -> Any:
    """`--since` as a date (a UTC day) or an aware date-time; the same forms `sync` takes."""
    from datetime import date

    if since is None:
        return None
    if not since.strip():
        raise _fail_usage("--since is empty (an unset variable in a crontab?)")
    text = since.strip()
    if len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    try:
        return parse_instant(text, "--since")
    except config_error as exc:
        raise _fail_usage(str(exc)) from None


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.stdout.print(f"stackai-runs {version('stackai-runs')}", highlight=False)
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Sync StackAI flow runs into DuckDB, incrementally; or run the API simulator."""


def main() -> None:
    """Console-script entry point (`stackai-runs`).

    A closed stdout (`stackai-runs report | head -1`) is a normal end: exit 0, nothing more
    printed (`console.stdout` says so to rich; here for what Python still holds at exit).
    """
    try:
        app()
    except SystemExit as exit_:
        if exit_.code in (None, EXIT_OK):
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                _quiet_stdout()
        raise


def _quiet_stdout() -> None:
    # the reader is gone: send what Python still holds to /dev/null, so its flush at exit
    # neither fails nor prints "Exception ignored ... BrokenPipeError"
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
