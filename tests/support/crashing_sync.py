"""Run `stackai-runs ARGS...` and SIGKILL this process at a chosen point of dlt's pipeline.

Usage: python crashing_sync.py POINT ARGS...   (POINT: see `KILL_POINTS`)

The points are dlt's own step boundaries, patched here and not in the product, so that a test can
prove that state only moves with data wherever a cron job happens to die.
"""

from __future__ import annotations

import os
import signal
import sys

from dlt.common.storages import FileStorage
from dlt.destinations.impl.duckdb.duck import DuckDbCopyJob
from dlt.destinations.impl.postgres.postgres import PostgresCsvCopyJob
from dlt.destinations.job_client_impl import SqlLoadJob
from dlt.load.load import Load
from dlt.pipeline.pipeline import Pipeline


def _die(*args: object, **kwargs: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _die_after_committing_runs(job_class: type):
    copy_into_staging = job_class.run

    def run(job) -> None:
        copy_into_staging(job)
        if job.load_table_name == "flow_runs":
            _die()

    return run


_run_sql_job = SqlLoadJob.run


def _die_between_delete_and_insert(table: str):
    def run(job: SqlLoadJob) -> None:
        """`table`'s merge job: run its first statement (the DELETE of the rows being
        replaced) as dlt runs the job, then die before its INSERT."""
        if os.path.basename(job._file_path).startswith(f"{table}."):
            _delete_then_die(job)
        else:
            _run_sql_job(job)

    return run


def _delete_then_die(job: SqlLoadJob) -> None:
    job._sql_client = job._job_client.sql_client
    with FileStorage.open_zipsafe_ro(job._file_path, "r", encoding="utf-8") as f:
        sql = f.read()
    statements = job._split_fragments(sql)
    assert statements[0].upper().startswith("DELETE"), statements[0]
    with job.maybe_transaction(sql):
        job._sql_client.execute_many(statements[:1])
        _die()


KILL_POINTS = {
    # extracted (runs and state written to a package), nothing normalised or loaded
    "before_normalize": (Pipeline, "normalize"),
    # normalised, nothing loaded
    "before_load": (Pipeline, "load"),
    # table files loaded into the staging dataset, the merge into stackai not yet run
    "mid_load": (Load, "create_followup_jobs"),
    # every job done, the package not yet marked loaded
    "before_commit": (Load, "complete_package"),
}
KILL_AFTER = {
    # the runs' file copied into the staging dataset and committed, before dlt records the job
    # as done: on resume the job runs again (dlt-hub/dlt#3023)
    "after_staging_commit": [
        (DuckDbCopyJob, "run", _die_after_committing_runs(DuckDbCopyJob)),
        (PostgresCsvCopyJob, "run", _die_after_committing_runs(PostgresCsvCopyJob)),
    ],
    # inside the merge of flow_runs: rows being replaced deleted, their new versions not inserted
    "mid_merge": [(SqlLoadJob, "run", _die_between_delete_and_insert("flow_runs"))],
    "mid_usage_merge": [
        (SqlLoadJob, "run", _die_between_delete_and_insert("flow_runs__llm_usage"))
    ],
}


def _signal_self(signum: int, original):
    sent = []

    def run(*args, **kwargs):
        if not sent:  # one signal, as a user sends it
            sent.append(signum)
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    return run


if __name__ == "__main__":
    point = sys.argv[1]
    if point.startswith("signal:"):
        # signal:SIGTERM:mid_load sends the signal to itself at that step, then goes on: what
        # the command's signal handling does with it is what a test checks
        _, name, step = point.split(":")
        owner, method = KILL_POINTS[step]
        setattr(owner, method, _signal_self(getattr(signal, name), getattr(owner, method)))
    elif point in KILL_AFTER:
        for owner, name, replacement in KILL_AFTER[point]:
            setattr(owner, name, replacement)
    else:
        owner, name = KILL_POINTS[point]
        setattr(owner, name, _die)
    sys.argv = ["stackai-runs", *sys.argv[2:]]
    from pipelines.cli import main  # installs the signal handlers, as the command does

    main()
