"""Choosing where a sync loads, and what only a server destination needs: NUL characters on
PostgreSQL, the advisory lock shared by every machine, and one-line errors for a bad server
or bad credentials that never show the password. Real servers only (tests/support/postgres.py)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import timedelta

import pytest

from pipelines.load import SyncLocked, run_sync
from pipelines.load.destination import choose, pipelines_dir_for
from pipelines.load.lock import postgres_lock
from pipelines.stackai.config import ConfigError
from tests.conftest import DESTINATIONS
from tests.support import postgres
from tests.support.cli import ROOT, cli_command, environment, stackai_runs, sync_args_for
from tests.support.store import execute, query
from tests.support.truth import assert_matches, expected_runs, loaded_runs


def postgres_sync_args(settings) -> list[str]:
    """`sync` arguments for the settings' flows into PostgreSQL (no --duckdb)."""
    args = sync_args_for(replace(settings, destination=choose("postgres")))
    assert "--duckdb" not in args and args[-2:] == ["--destination", "postgres"]
    return args


NUL_TEXT = "before\x00after \x00"


@pytest.mark.parametrize("destination", DESTINATIONS, indirect=True)
def test_nul_is_kept_on_duckdb_and_replaced_on_postgres_counted_never_dropped(
    settings, world, caplog
):
    flow = settings.flows[0]
    run = world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(minutes=5))
    world.update_run(run["run_id"], inputs=NUL_TEXT, error="boom\x00")
    # and a record rejected for another reason, whose raw text holds a NUL too
    bad = world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(minutes=4))
    world.update_run(bad["run_id"], total_tokens="12\x00x", outputs="x\x00y")
    with caplog.at_level("WARNING"):
        report = run_sync(settings, now=world.now)
    assert report.ok, report
    assert report.rejected == 1
    stored = loaded_runs(settings)[run["run_id"].lower()]
    (rejected,) = query(settings, "select raw, reason from stackai.flow_runs_rejected")
    # a reject's raw text and reason escape a NUL (JSON, repr): kept exactly on both
    assert '"x\\u0000y"' in rejected["raw"]
    assert rejected["reason"] == "total_tokens: '12\\x00x' is not a valid bigint"
    if settings.target().name == "postgres":
        assert stored["inputs"] == NUL_TEXT.replace("\x00", "\ufffd")
        assert stored["error"] == "boom\ufffd"
        assert report.nul_replaced >= 1
        assert run["run_id"].lower() in caplog.text
    else:
        assert stored["inputs"] == NUL_TEXT and stored["error"] == "boom\x00"
        assert report.nul_replaced == 0
    # every other field as served, NUL rule aside
    expected = expected_runs(world)
    del expected[bad["run_id"].lower()]
    loaded = loaded_runs(settings)
    for row in (expected[run["run_id"].lower()], loaded[run["run_id"].lower()]):
        row["inputs"] = row["inputs"].replace("\x00", "\ufffd")
        row["error"] = row["error"].replace("\x00", "\ufffd")
    assert_matches(loaded, expected)


def test_nul_count_is_in_the_json_summary(settings, world, postgres_url):
    flow = settings.flows[0]
    run = world.add_run(flow.org_id, flow.flow_id, date=world.now - timedelta(minutes=5))
    world.update_run(run["run_id"], feedback="a\x00b")
    settings = replace(settings, destination=choose("postgres"), flows=(flow,))
    result = stackai_runs(
        *sync_args_for(settings), "--json", "--quiet", env={"STACKAI_API_KEY": settings.api_key}
    )
    assert result.returncode == 0, result.stderr
    import json

    summary = json.loads(result.stdout)
    assert summary["nul_replaced"] == 1
    assert run["run_id"].lower() in result.stderr


def test_a_sync_on_another_machine_holds_the_lock(settings, world, postgres_url):
    """The advisory lock lives in the database: a sync elsewhere (here: another connection,
    another working folder) holding it makes this sync do nothing and say so; once it is
    released, the sync loads everything once."""
    settings = replace(settings, destination=choose("postgres"))
    busy = pytest.raises(SyncLocked, match="another stackai-runs sync is using postgres at")
    with postgres_lock(settings.target(), timeout=0), busy:
        run_sync(settings, now=world.now)
    assert not pipelines_dir_for(settings.target()).exists(), "the locked sync did something"
    assert run_sync(settings, now=world.now).ok
    assert run_sync(settings, now=world.now).ok
    assert_matches(loaded_runs(settings), expected_runs(world))


def test_two_cli_syncs_at_once_one_runs_the_other_exits_1(settings, world, postgres_url):
    settings = replace(settings, destination=choose("postgres"))
    gate = {"held": False}

    def hold_first_page(org_id: str, flow_id: str, params: dict) -> None:
        if not gate["held"]:
            gate["held"] = True
            second = subprocess.run(
                cli_command(*sync_args_for(settings), "--quiet"),
                env=environment({"STACKAI_API_KEY": settings.api_key}),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            gate["second"] = second

    world.before_page = hold_first_page
    try:
        first = stackai_runs(
            *sync_args_for(settings), "--quiet", env={"STACKAI_API_KEY": settings.api_key}
        )
    finally:
        world.before_page = None
    second = gate["second"]
    assert first.returncode == 0, first.stderr
    assert second.returncode == 1
    assert "another stackai-runs sync is using postgres at 127.0.0.1" in second.stderr
    assert_matches(loaded_runs(settings), expected_runs(world))


def test_an_unknown_destination_is_refused_in_one_line(settings):
    with pytest.raises(ConfigError, match="unknown destination 'oracle'"):
        choose("oracle")
    result = stackai_runs(
        *sync_args_for(settings), "--destination", "oracle", env={"STACKAI_API_KEY": "sk-x"}
    )
    assert result.returncode == 2
    assert "unknown destination 'oracle'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_credentials_name_the_key(settings, monkeypatch):
    monkeypatch.delenv("DESTINATION__POSTGRES__CREDENTIALS", raising=False)
    result = stackai_runs(
        *sync_args_for(settings), "--destination", "postgres", env={"STACKAI_API_KEY": "sk-x"}
    )
    assert result.returncode == 2, result.stderr
    assert "DESTINATION__POSTGRES__CREDENTIALS" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("fault", ["wrong password", "no server", "no database"])
def test_a_bad_server_is_one_line_naming_host_and_database_never_the_password(
    settings, postgres_server, postgres_url, fault
):
    database = postgres_url.rsplit("/", 1)[1]
    port = postgres_server.port
    password = postgres.PASSWORD
    if fault == "wrong password":
        password = "Wr0ng-but-secret"
    elif fault == "no server":
        with __import__("socket").socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    elif fault == "no database":
        database = "no_such_db"
    url = f"postgresql://{postgres.USER}:{password}@127.0.0.1:{port}/{database}"
    result = stackai_runs(
        *postgres_sync_args(settings),
        "--json",
        env={"STACKAI_API_KEY": settings.api_key, "DESTINATION__POSTGRES__CREDENTIALS": url},
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, result.stderr
    assert f"127.0.0.1:{port}/{database}" in errors[0]
    for text in (result.stdout, result.stderr):
        assert password not in text and postgres.PASSWORD not in text
    assert "Traceback" not in result.stderr


def test_missing_privileges_fail_in_one_line_naming_the_database(
    settings, world, postgres_server, postgres_url
):
    settings = replace(settings, destination=choose("postgres"))
    assert run_sync(settings, now=world.now).ok  # the owner made the schema and tables
    execute(settings, "create role reader login password 'reader-secret-pw'")
    database = postgres_url.rsplit("/", 1)[1]
    url = f"postgresql://reader:reader-secret-pw@127.0.0.1:{postgres_server.port}/{database}"
    result = stackai_runs(
        *postgres_sync_args(settings),
        env={"STACKAI_API_KEY": settings.api_key, "DESTINATION__POSTGRES__CREDENTIALS": url},
    )
    assert result.returncode == 1, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "sync failed" in x]
    assert f"postgres at 127.0.0.1:{postgres_server.port}/{database}" in line
    assert "permission denied" in line
    assert "reader-secret-pw" not in result.stderr + result.stdout


def test_the_password_is_in_no_file_dlt_keeps_nor_in_the_database(settings, world, postgres_url):
    settings = replace(settings, destination=choose("postgres"))
    assert run_sync(settings, now=world.now).ok
    secret = postgres.PASSWORD.encode()
    folder = pipelines_dir_for(settings.target())
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files, "precondition: the working folder has dlt's files (state, schemas, trace)"
    for path in files:
        assert secret not in path.read_bytes(), path
    for table in ("_dlt_pipeline_state", "_dlt_loads", "_dlt_version", "flow_runs", "flows"):
        for row in query(settings, f"select * from stackai.{table}"):
            assert postgres.PASSWORD not in repr(row), table
    from dlt.common.pipeline import get_dlt_pipelines_dir  # noqa: F401  (dlt importable)

    from pipelines.load import open_pipeline

    trace = open_pipeline(settings.target()).last_trace
    assert trace is not None and postgres.PASSWORD not in repr(trace.asdict())


CLOUD_CREDENTIALS = {
    "snowflake": "snowflake://loader:sn0w-secret@kgiotue-wn98412/dlt_data?warehouse=WH&role=R",
    "motherduck": "md:stackai?motherduck_token=md-secret-token",
    "bigquery": None,  # a service-account JSON: only the missing case is checked
}


@pytest.mark.parametrize("name", sorted(CLOUD_CREDENTIALS))
def test_configured_only_destinations_need_credentials_named_by_their_key(name, monkeypatch):
    monkeypatch.delenv(f"DESTINATION__{name.upper()}__CREDENTIALS", raising=False)
    with pytest.raises(ConfigError, match=f"DESTINATION__{name.upper()}__CREDENTIALS"):
        choose(name)
    url = CLOUD_CREDENTIALS[name]
    if url is None:
        return
    monkeypatch.setenv(f"DESTINATION__{name.upper()}__CREDENTIALS", url)
    choice = choose(name)
    secret = url.split(":")[2].split("@")[0] if name == "snowflake" else "md-secret-token"
    assert choice.name == name and secret not in choice.describe()
    assert secret not in str(pipelines_dir_for(choice))


def test_duckdb_flag_with_another_destination_is_refused(settings, postgres_url):
    result = stackai_runs(
        *sync_args_for(settings), "--destination", "postgres", env={"STACKAI_API_KEY": "sk-x"}
    )  # sync_args_for passes --duckdb
    assert result.returncode == 2
    assert "--duckdb is for the duckdb destination" in result.stderr


def test_an_unencoded_at_in_the_password_shows_no_part_of_it(settings):
    url = "postgresql://me:Leak@pw2@127.0.0.1:5432/analytics"
    result = stackai_runs(
        "sync",
        "--flow",
        "o/f",
        "--destination",
        "postgres",
        env={"STACKAI_API_KEY": "sk-x", "DESTINATION__POSTGRES__CREDENTIALS": url},
    )
    assert result.returncode == 2
    assert "percent-encode" in result.stderr
    assert "Leak" not in result.stderr and "pw2" not in result.stderr


def test_the_summary_names_where_it_loaded_and_the_working_folder_keeps_no_data_files(
    settings, world, postgres_url
):
    settings = replace(settings, destination=choose("postgres"))
    result = stackai_runs(*sync_args_for(settings), env={"STACKAI_API_KEY": settings.api_key})
    assert result.returncode == 0, result.stderr
    database = postgres_url.rsplit("/", 1)[1]
    assert "into postgres at 127.0.0.1:" in result.stdout and database in result.stdout
    folder = pipelines_dir_for(settings.target())
    kept = [p for p in folder.rglob("*") if p.suffix in (".csv", ".parquet", ".jsonl")]
    assert not kept, kept[:3]
