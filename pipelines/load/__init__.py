"""Running a sync: the dlt pipeline and its destination, the lock, the tables' upkeep.

`run_sync` is what `stackai-runs sync` calls; the rest is public for tests and benchmarks.
"""

from pipelines.load.destination import DestinationChoice, choose, lock_for
from pipelines.load.duckdb_file import DuckDBPathError, check_duckdb_path
from pipelines.load.lock import DestinationUnreachable, SyncLocked, sync_lock
from pipelines.load.pipeline import PIPELINE_NAME, configure_dlt, open_pipeline, pipelines_dir_for
from pipelines.load.sync import load_source, run_sync

__all__ = [
    "PIPELINE_NAME",
    "DestinationChoice",
    "DestinationUnreachable",
    "DuckDBPathError",
    "SyncLocked",
    "check_duckdb_path",
    "choose",
    "configure_dlt",
    "load_source",
    "lock_for",
    "open_pipeline",
    "pipelines_dir_for",
    "run_sync",
    "sync_lock",
]
