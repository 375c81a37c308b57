"""One measurement in a fresh process: `python -m benchmarks.worker < SPEC.json`.

Each measured load or sync runs in its own interpreter, so that its peak RSS is its own, no
measurement inherits another's caches, and (for the HTTP syncs) the client does not share a GIL
with the simulator, which `run.py` serves from the parent process. The timers start after the
imports and after the input is in memory, and stop when the data is committed.

The spec is a JSON object with a `task` (see `TASKS`); the result is one JSON line on stdout,
prefixed with `RESULT_PREFIX`: `seconds` (the measured call), `rss_imports_mb` (peak RSS after
the imports, before the task), `rss_peak_mb` (peak RSS of the whole process), plus what the task
reports (`steps`: dlt's extract / normalize / load seconds; for syncs `ok`, `error`, `runs`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import pickle
import resource
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
import orjson
from dlt.sources.rest_api import rest_api_source
from requests.compat import json as requests_json

from pipelines.load import configure_dlt, destination, load_source, open_pipeline, run_sync
from pipelines.settings import DEFAULT_MEMORY_LIMIT, SyncSettings
from pipelines.stackai import endpoint
from pipelines.stackai.client import Page
from pipelines.stackai.flows import FlowRef
from pipelines.stackai.http import HttpSettings
from pipelines.stackai.progress import SyncReport
from pipelines.stackai.source import stackai

RESULT_PREFIX = "BENCH-RESULT "


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (`VmHWM` of /proc/self/status).

    Not `getrusage(...).ru_maxrss`: Linux carries that figure over from the forking parent
    through `execve`, so a worker started by a parent holding a 1 GB simulator world would
    report at least 1 GB whatever it did.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # not Linux


def _steps(pipeline: dlt.Pipeline) -> dict[str, float]:
    trace = pipeline.last_trace
    if trace is None:
        return {}
    return {
        step.step: round((step.finished_at - step.started_at).total_seconds(), 3)
        for step in trace.steps
        if step.finished_at is not None
    }


def _load_pages(path: str) -> dict[str, list[bytes]]:
    with open(path, "rb") as handle:
        return pickle.load(handle)


class MemoryRunsClient:
    """`RunsClient`'s `iter_pages` over pages already fetched: decode each JSON body as the
    HTTP client does (orjson, `client._page_of`) and hand it to the source with its bytes."""

    def __init__(self, pages: dict[str, list[bytes]]) -> None:
        self.pages = pages

    def iter_pages(
        self, flow: FlowRef, start: datetime | None, end: datetime | None
    ) -> Iterator[Page]:
        for body in self.pages[str(flow)]:
            yield Page(orjson.loads(body), body)

    def iter_projects(self) -> Iterator[Page]:
        """The org summary: no names here (the load path does not need them)."""
        yield Page([])


def load_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """Pages in memory -> the sync's batch path (`stackai`, `load_source`) -> DuckDB."""
    pages = _load_pages(spec["pages"])
    flows = [FlowRef.parse(name) for name in pages]
    report = SyncReport()
    configure_dlt(spec.get("workers", 4))
    started = time.perf_counter()
    pipeline = open_pipeline(Path(spec["duckdb"]), DEFAULT_MEMORY_LIMIT)
    source = stackai(
        flows=[str(flow) for flow in flows],
        api_key="in-memory",
        now=datetime.fromisoformat(spec["now"]),
        client=MemoryRunsClient(pages),
        progress=report,
        deduplicate=False,  # as `stackai-runs sync` runs it
    )
    load_source(pipeline, source)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "ok": report.ok,
        "error": report.error,
        "runs": sum(f.runs for f in report.flows.values()),
        "steps": _steps(pipeline),
    }


def load_naive(spec: dict[str, Any]) -> dict[str, Any]:
    """Pages in memory -> a plain dlt resource yielding the API's dicts, dlt's defaults
    (insert_values, inferred types), merge on run_id."""
    pages = _load_pages(spec["pages"])

    @dlt.resource(name="flow_runs", write_disposition="merge", primary_key="run_id")
    def flow_runs() -> Iterator[list[dict[str, Any]]]:
        for bodies in pages.values():
            for body in bodies:
                page = requests_json.loads(body)
                if page:
                    yield page

    started = time.perf_counter()
    pipeline = dlt.pipeline(
        pipeline_name="naive_dlt",
        pipelines_dir=spec["pipelines_dir"],
        destination=dlt.destinations.duckdb(spec["duckdb"]),
        dataset_name="stackai",
    )
    pipeline.run(flow_runs())
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "ok": True, "steps": _steps(pipeline)}


def load_raw(spec: dict[str, Any]) -> dict[str, Any]:
    """Pages in memory -> one JSON array file per flow -> `create table as select * from
    read_json(...)` in DuckDB: no normalisation, no types but DuckDB's own detection."""
    pages = _load_pages(spec["pages"])
    folder = Path(spec["pipelines_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    files = []
    for index, bodies in enumerate(pages.values()):
        path = folder / f"flow_{index}.json"
        # each body is a compact JSON array: splice the pages into one array
        path.write_bytes(b"[" + b",".join(body[1:-1] for body in bodies if len(body) > 2) + b"]")
        files.append(str(path))
    listed = ", ".join("'" + name.replace("'", "''") + "'" for name in files)
    with duckdb.connect(spec["duckdb"]) as con:
        con.execute("create schema if not exists stackai")
        con.execute(
            "create table stackai.flow_runs as select * from"
            f" read_json([{listed}], format = 'array', sample_size = -1)"
        )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "ok": True, "steps": {}}


def sync(spec: dict[str, Any]) -> dict[str, Any]:
    """`run_sync` of the given flows against a running simulator (`http`, if in the spec:
    `HttpSettings` fields to change, e.g. `adaptive_concurrency`; `limit` in the result: what
    the request limit did)."""
    http = dataclasses.replace(HttpSettings(), **spec.get("http", {}))
    settings = SyncSettings(
        base_url=spec["base_url"],
        api_key=spec["api_key"],
        flows=tuple(FlowRef.parse(name) for name in spec["flows"]),
        duckdb_path=Path(spec["duckdb"]),
        page_size=spec["page_size"],
        http=http,
    )  # every other setting as a user gets it by default (max_concurrent_flows 8, ...)
    now = datetime.fromisoformat(spec["now"])
    started, cpu = time.perf_counter(), time.process_time()
    report = run_sync(settings, now=now)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    flows = report.flows.values()
    return {
        "seconds": seconds,
        "ok": report.ok,
        "error": report.error or next((f.error for f in flows if f.error), None),
        "runs": sum(f.runs for f in flows),
        "requests": sum(f.requests for f in flows),
        "retries": sum(f.retries for f in flows),
        "rechecks": sum(f.rechecks for f in flows),
        "slices": sum(f.slices for f in flows),
        "probes": sum(f.probes for f in flows),
        "limit": dataclasses.asdict(report.concurrency) if report.concurrency else None,
        "cpu_seconds": round(cpu, 3),
        "steps": _steps(open_pipeline(Path(spec["duckdb"]))),
    }


def serial_client(spec: dict[str, Any]) -> dict[str, Any]:
    """The floor of a one-request-at-a-time client: one flow read with a plain `requests`
    session, page 0, 1, 2 ... until a short page, each body decoded with orjson, nothing
    written. After the timer: `summary`, the runs read as `run.loaded_summary` gives them
    (count, md5 of the sorted lowercase run_ids, sum of total_tokens, LLM-usage rows)."""
    import hashlib

    import requests

    (flow,) = (FlowRef.parse(name) for name in spec["flows"])
    url, size = f"{spec['base_url']}/{flow.path}", spec["page_size"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {spec['api_key']}"
    read: list[dict[str, Any]] = []
    page = 0
    started = time.perf_counter()
    while True:
        response = session.get(url, params={"page": page, "page_size": size}, timeout=60)
        page += 1
        if response.status_code != 200:
            return {"seconds": None, "ok": False, "error": f"HTTP {response.status_code}"}
        runs = orjson.loads(response.content)
        read.extend(runs)
        if len(runs) < size:
            break
    seconds = time.perf_counter() - started
    session.close()
    ids = sorted(str(run["run_id"]).lower() for run in read)
    return {
        "seconds": seconds,
        "ok": True,
        "requests": page,
        "summary": {
            "runs": len(read),
            "ids_md5": hashlib.md5(",".join(ids).encode()).hexdigest(),
            "total_tokens": sum(run.get("total_tokens") or 0 for run in read),
            "usage_rows": sum(len(run.get("llm_usage") or ()) for run in read),
        },
        "steps": {},
    }


def rest_api_config(
    base_url: str, api_key: str, flows: list[str], page_size: int
) -> dict[str, Any]:
    """What a user would write instead: dlt's `rest_api` source, one resource per flow,
    0-based page numbers until an empty page, merge on run_id, everything else default."""
    return {
        "client": {"base_url": base_url, "auth": {"type": "bearer", "token": api_key}},
        "resource_defaults": {
            "primary_key": "run_id",
            "write_disposition": "merge",
            "endpoint": {"params": {"page_size": page_size}},
        },
        "resources": [
            {
                "name": f"flow_{index}",
                "table_name": "flow_runs",
                "endpoint": {
                    "path": FlowRef.parse(name).path,
                    "paginator": {
                        "type": "page_number",
                        "base_page": 0,
                        "page_param": "page",
                        "total_path": None,
                        "stop_after_empty_page": True,
                    },
                },
            }
            for index, name in enumerate(flows)
        ],
    }


def sync_rest_api(spec: dict[str, Any]) -> dict[str, Any]:
    """The same flows through `rest_api_source` (sequential, insert_values, inferred types)."""
    config = rest_api_config(spec["base_url"], spec["api_key"], spec["flows"], spec["page_size"])
    started, cpu = time.perf_counter(), time.process_time()
    pipeline = dlt.pipeline(
        pipeline_name="rest_api_config",
        pipelines_dir=spec["pipelines_dir"],
        destination=dlt.destinations.duckdb(spec["duckdb"]),
        dataset_name="stackai",
    )
    pipeline.run(rest_api_source(config))  # type: ignore[arg-type]
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "ok": True, "cpu_seconds": round(cpu, 3), "steps": _steps(pipeline)}


def _file_formats(info: Any) -> dict[str, list[str]]:
    """Table -> the file formats dlt loaded it from (its completed jobs), e.g. csv or parquet."""
    formats: dict[str, set[str]] = {}
    for package in info.load_packages:
        for job in package.jobs.get("completed_jobs", []):
            name = job.job_file_info.table_name
            formats.setdefault(name, set()).add(job.job_file_info.file_format)
    return {name: sorted(found) for name, found in sorted(formats.items())}


def load_postgres(spec: dict[str, Any]) -> dict[str, Any]:
    """Pages in memory -> the sync's load path into PostgreSQL (credentials from
    DESTINATION__POSTGRES__CREDENTIALS, dlt's working folder under DLT_DATA_DIR).

    As `run_sync` loads: `destination.choose("postgres")`, `open_pipeline(choice)`,
    `adapt_source` (Arrow tables as CSV `COPY`, NUL replaced), `load_source`. With
    `file_format` "parquet" the runs and usage tables are set back to parquet after
    `adapt_source` (NUL still replaced, rejects still INSERTs), so that dlt loads them with
    its ADBC parquet job when `adbc-driver-postgresql` is installed.
    """
    pages = _load_pages(spec["pages"])
    flows = [FlowRef.parse(name) for name in pages]
    report = SyncReport()
    configure_dlt(spec.get("workers", 4))
    started = time.perf_counter()
    choice = destination.choose("postgres")
    pipeline = open_pipeline(choice)
    source = stackai(
        flows=[str(flow) for flow in flows],
        api_key="in-memory",
        now=datetime.fromisoformat(spec["now"]),
        client=MemoryRunsClient(pages),
        progress=report,
        deduplicate=False,  # as `stackai-runs sync` runs it
    )
    source = destination.adapt_source(source, pipeline, report)
    if spec.get("file_format") == "parquet":
        for resource in source.resources.values():
            resource.apply_hints(file_format="parquet")
            resource.apply_hints(
                table_name=endpoint.LLM_USAGE_TABLE,
                create_table_variant=True,
                file_format="parquet",
            )
    info = load_source(pipeline, source)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "ok": report.ok,
        "error": report.error,
        "runs": sum(f.runs for f in report.flows.values()),
        "steps": _steps(pipeline),
        "file_formats": _file_formats(info),
        "location": choice.location,
    }


PLAIN_COLUMNS: dict[str, str] = {
    "run_id": "text",
    "conversation_id": "text",
    "date": "timestamptz",
    "is_flow_successful": "boolean",
    "state": "text",
    "error": "text",
    "latency": "double precision",
    "total_tokens": "bigint",
    "user_id": "text",
    "inputs": "text",
    "outputs": "text",
    "llms": "text",
    "feedback": "text",
    "llm_usage": "jsonb",
    "run_type": "text",
    "ran_by_type": "text",
    "ran_by_id": "text",
    "ran_by_display_name": "text",
    "parent_run_id": "text",
    "parent_project_id": "text",
    "parent_project_name": "text",
}
"""The plain COPY's table: the API record's top-level fields, typed, `llm_usage` as jsonb."""


def _csv_field(value: Any) -> Any:
    if value is None:
        return "\\N"  # COPY's `null` marker below (an empty field stays an empty string)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")  # PostgreSQL's text holds no NUL
    return value


def copy_postgres(spec: dict[str, Any]) -> dict[str, Any]:
    """Pages in memory -> one CSV text (orjson-decoded records, one row per run, the top-level
    fields of `PLAIN_COLUMNS`, `llm_usage` as JSON text, NUL replaced) -> one `COPY ... FROM
    STDIN (FORMAT csv)` with psycopg2's `copy_expert` into an empty table, one commit. No dedup,
    no merge, no usage table, no state: the floor of putting these rows into PostgreSQL from
    Python. The table is created before the timer starts."""
    import psycopg2

    pages = _load_pages(spec["pages"])
    table = f"{spec['schema']}.flow_runs"
    con = psycopg2.connect(os.environ["DESTINATION__POSTGRES__CREDENTIALS"])
    try:
        with con.cursor() as cursor:
            cursor.execute(f"create schema {spec['schema']}")
            columns = ", ".join(f'"{name}" {kind}' for name, kind in PLAIN_COLUMNS.items())
            cursor.execute(f"create table {table} ({columns})")
        con.commit()
        names = list(PLAIN_COLUMNS)
        started = time.perf_counter()
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        for bodies in pages.values():
            for body in bodies:
                for record in orjson.loads(body):
                    writer.writerow([_csv_field(record.get(name)) for name in names])
        written = time.perf_counter()
        text.seek(0)
        listed = ", ".join(f'"{name}"' for name in names)
        with con.cursor() as cursor:
            cursor.copy_expert(
                f"copy {table} ({listed}) from stdin with (format csv, null '\\N')", text
            )
        con.commit()
        seconds = time.perf_counter() - started
    finally:
        con.close()
    return {
        "seconds": seconds,
        "ok": True,
        "steps": {},
        "csv_seconds": round(written - started, 3),
        "copy_seconds": round(seconds - (written - started), 3),
        "csv_mb": round(text.tell() / 1e6, 1),
    }


UNKNOWN_MODELS = 40
"""Distinct made-up model ids among the synthetic calls' unknown share (each one a lookup miss
the `PriceBook` remembers)."""


def synthetic_calls(count: int, seed: int, anchor: datetime, unknown_share: float) -> list[tuple]:
    """`count` calls `(provider, model_id, when, input_tokens, output_tokens)` drawn like the
    simulator's `llm_usage` (its providers' weights, each provider's models, 6% without token
    counts, 40-4,000 input and 5-1,500 output tokens), dated uniformly over the two years
    before `anchor`, with `unknown_share` of them for model ids nobody prices."""
    import random
    from datetime import timedelta

    from pipelines.simulator import catalog

    rng = random.Random(seed)
    providers = [str(p.value) for p in catalog.PROVIDER_WEIGHTS]
    weights = list(catalog.PROVIDER_WEIGHTS.values())
    models = {str(p.value): m for p, m in catalog.MODELS.items()}
    span = int(timedelta(days=730).total_seconds())
    calls = []
    for provider in rng.choices(providers, weights, k=count):
        if rng.random() < unknown_share:
            model_id = f"in-house-model-{rng.randrange(UNKNOWN_MODELS)}"
        else:
            model_id = rng.choice(models[provider])
        when = anchor - timedelta(seconds=rng.randrange(span))
        if rng.random() < 0.06:
            tokens_in = tokens_out = None
        else:
            tokens_in, tokens_out = rng.randint(40, 4000), rng.randint(5, 1500)
        calls.append((provider, model_id, when, tokens_in, tokens_out))
    return calls


def _library_price(call: tuple) -> Any:
    """genai-prices' own `calc_price` for one call (None: no price), as a user would call it."""
    from genai_prices import Usage, calc_price

    from pipelines.pricing import provider_id

    provider, model_id, when, tokens_in, tokens_out = call
    pid = provider_id(provider)
    if pid is None:
        return None
    try:
        return calc_price(
            Usage(input_tokens=tokens_in or 0, output_tokens=tokens_out or 0),
            model_id,
            provider_id=pid,
            genai_request_timestamp=when,
        )
    except LookupError:
        return None


def price_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """`PriceBook.price` over `calls` synthetic calls in memory (a fresh book: its lookups
    included), then genai-prices' `calc_price` over the first `sample` of them; both answers
    compared on the sample."""
    from pipelines.pricing import PriceBook

    calls = synthetic_calls(
        spec["calls"], spec["seed"], datetime.fromisoformat(spec["anchor"]), spec["unknown_share"]
    )
    sample = calls[: spec["sample"]]
    book = PriceBook()
    price = book.price
    unpriced = 0
    started = time.perf_counter()
    for call in calls:
        if price(*call) is None:
            unpriced += 1
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    library = [_library_price(call) for call in sample]
    library_seconds = time.perf_counter() - started
    ours = [book.price(*call) for call in sample]
    differ = fees = 0
    fee_models: dict[str, int] = {}
    for call, a, b in zip(sample, ours, library, strict=True):
        if (a is None) != (b is None) or (
            a is not None
            and (a.input_cost_usd, a.output_cost_usd) != (b.input_price, b.output_price)
        ):
            differ += 1
        elif a is not None and a.cost_usd != b.total_price:
            # calc_price's total adds a per-request fee (`requests_kcount`) PriceBook leaves out
            fees += 1
            key = f"{call[0]}/{call[1]}"
            fee_models[key] = fee_models.get(key, 0) + 1
    return {
        "seconds": seconds,
        "ok": True,
        "calls": len(calls),
        "unpriced": unpriced,
        "sample": len(sample),
        "library_seconds": library_seconds,
        "sample_differ": differ,
        "sample_fee_differ": fees,
        "sample_fee_models": fee_models,
        "sample_priced": sum(a is not None for a in ours),
        "steps": {},
    }


def price_file(spec: dict[str, Any]) -> dict[str, Any]:
    """`price_calls(open_pipeline(path), PriceBook())` on a DuckDB file already loaded, then
    once more right after (nothing left to price: the no-op cost of every sync)."""
    from pipelines.load.costs import price_calls
    from pipelines.pricing import PriceBook

    configure_dlt(4)  # as a sync has set it before it prices
    started = time.perf_counter()
    pipeline = open_pipeline(Path(spec["duckdb"]))
    report = price_calls(pipeline, PriceBook())
    seconds = time.perf_counter() - started
    steps = _steps(pipeline)
    rss_first = peak_rss_mb()
    started = time.perf_counter()
    again = price_calls(open_pipeline(Path(spec["duckdb"])), PriceBook())
    again_seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "ok": True,
        "priced": report.priced,
        "unpriced": report.unpriced,
        "steps": steps,
        "rss_first_mb": round(rss_first, 1),
        "again_priced": again.priced,
        "again_seconds": again_seconds,
    }


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "load_ours": load_ours,
    "load_naive": load_naive,
    "load_raw": load_raw,
    "sync": sync,
    "sync_rest_api": sync_rest_api,
    "serial_client": serial_client,
    "load_postgres": load_postgres,
    "copy_postgres": copy_postgres,
    "price_memory": price_memory,
    "price_file": price_file,
}


def main() -> int:
    spec = json.loads(sys.stdin.read())
    rss_imports = peak_rss_mb()
    result = TASKS[spec["task"]](spec)
    result["rss_imports_mb"] = round(rss_imports, 1)
    result["rss_peak_mb"] = round(peak_rss_mb(), 1)
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
