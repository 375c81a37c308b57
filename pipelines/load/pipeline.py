"""The dlt pipeline a sync runs: its name, working folder, destination and dlt settings."""

from __future__ import annotations

import os
from pathlib import Path

import dlt

from pipelines.load import destination
from pipelines.stackai import endpoint

PIPELINE_NAME = "stackai_runs"


DATASET_NAME = endpoint.DATASET_NAME


def pipelines_dir_for(duckdb_path: Path) -> Path:
    """dlt's working directory for a DuckDB file: beside it, named after it.

    Keeping it per file means the local state of one file can never be applied to another
    (pointing `--duckdb` elsewhere starts that file from its own state, restored from the file).
    """
    return destination.pipelines_dir_for(destination.choose("duckdb", duckdb_path))


def open_pipeline(
    target: Path | destination.DestinationChoice, memory_limit: str | None = None
) -> dlt.Pipeline:
    """The dlt pipeline that loads into `target`, dataset `stackai`.

    Args:
        target: A DuckDB file, or a destination chosen with `destination.choose`.
        memory_limit: DuckDB's `memory_limit` while loading (e.g. "512MB") when `target` is a
            path; None = DuckDB's default, 80% of RAM. Measured (benchmarks/): a
            1,000,000-run load peaks at 1.7 GB by default and at about 0.4 GB with 256MB, for a
            slightly slower load.

    Raises:
        OSError: the DuckDB file's folder cannot be created.
    """
    if isinstance(target, Path):
        target = destination.choose("duckdb", target, memory_limit)
    if target.duckdb_path is not None:
        target.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        pipelines_dir=str(destination.pipelines_dir_for(target)),
        destination=destination.make_destination(target),
        dataset_name=DATASET_NAME,
    )


def configure_dlt(max_concurrent_flows: int, destination_name: str = "duckdb") -> None:
    """Set the dlt settings a sync depends on (dlt reads them from the environment).

    Args:
        max_concurrent_flows: dlt's extract pool size: how many flows (parallelized resources)
            are fetched at once.
        destination_name: where the sync loads (`destination.DESTINATIONS`): into DuckDB, dlt's
            parquet files are written uncompressed.
    """
    os.environ["EXTRACT__WORKERS"] = str(max_concurrent_flows)
    # dlt gzips its intermediate files by default: 15% of the load path's time for files that
    # live a few seconds on local disk (benchmarks/).
    os.environ.setdefault("DATA_WRITER__DISABLE_COMPRESSION", "true")
    if destination_name == "duckdb":
        # likewise parquet's snappy (a third of the load step, benchmarks/) for files DuckDB
        # reads once from local disk; a warehouse's staging files are uploaded: they keep it
        os.environ.setdefault("DATA_WRITER__COMPRESSION", "none")
    # Runs arrive as Arrow tables (batch.py); dlt adds `_dlt_load_id` to them only when asked,
    # and full refresh and the users' SQL rely on it.
    os.environ["NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID"] = "true"
    # dlt keeps every loaded package's data files (copies of the runs, inputs and outputs
    # included) in the working folder: 136 KB a no-op sync, GBs a year from cron. The data is
    # in the destination; keep only the packages' small bookkeeping files.
    os.environ.setdefault("LOAD__DELETE_COMPLETED_JOBS", "true")
