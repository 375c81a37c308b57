"""The destination's state is the truth: a working folder that disagrees with it is rebuilt.

dlt keeps each flow's cursor twice: in the working folder (a cache) and in the destination's
`_dlt_pipeline_state` table, committed with the data it describes. dlt restores the working
folder from the destination only when the destination's state is *newer*; a destination
restored from yesterday's backup (an older DuckDB file, a PostgreSQL database restored from a
dump) beside today's working folder would otherwise resume from today's cursors and never load
the runs in between.
"""

from __future__ import annotations

import logging

import dlt
from dlt.common.destination.exceptions import DestinationUndefinedEntity
from dlt.pipeline.state_sync import load_pipeline_state_from_destination

log = logging.getLogger(__name__)


def follow_destination_state(pipeline: dlt.Pipeline) -> dlt.Pipeline:
    """Drop the working folder's state when it is not the destination's latest state.

    Call with no pending package (load those first: they carry their own state). When the
    destination holds no state for the pipeline (a new or emptied database, a deleted DuckDB
    file) or an older one than the working folder, the working folder is wiped and dlt restores
    it from the destination at the next `run` (or starts afresh when there is none).

    Args:
        pipeline: the sync's pipeline (its destination set).

    Returns:
        The pipeline to use from now on (the same object; dropped when the state was stale).

    Raises:
        What dlt raises when the destination cannot be reached.
    """
    local = pipeline.state
    if pipeline.first_run or not local.get("_version_hash"):
        return pipeline  # nothing local to trust or distrust: dlt restores from the destination
    try:
        with pipeline.destination_client() as client:
            remote = load_pipeline_state_from_destination(pipeline.pipeline_name, client)
    except DestinationUndefinedEntity:
        remote = None  # no dataset, or no state table: nothing was ever loaded there
    if remote is not None and remote["_version_hash"] == local["_version_hash"]:
        return pipeline
    if remote is not None and remote["_state_version"] > local["_state_version"]:
        return pipeline  # newer at the destination: dlt restores it itself
    if remote is None:
        log.warning(
            "the destination holds no sync state, but the working folder %s does (a new or"
            " restored database?): starting from the destination, and the working folder's"
            " cursors are dropped",
            pipeline.working_dir,
        )
    else:
        log.warning(
            "the destination's sync state (version %s) is older than the working folder's"
            " (version %s): the destination was restored from a copy? Following the destination:"
            " runs loaded after that copy are read again",
            remote["_state_version"],
            local["_state_version"],
        )
    return pipeline.drop()
