"""Where a sync loads: the destination's name, its dlt factory, its working folder and its lock.

DuckDB (a file on this machine) is the default. The others are dlt's own destinations with
dlt's own credentials (`[destination.<name>] credentials` in `.dlt/secrets.toml`, or
`DESTINATION__<NAME>__CREDENTIALS`): PostgreSQL is tested for real; MotherDuck, BigQuery and
Snowflake are configured the same way and their SQL is checked to transpile, nothing more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
from dlt.common.configuration.exceptions import ConfigurationException
from dlt.common.destination import Destination

from pipelines.stackai.config import ConfigError
from pipelines.stackai.progress import SyncReport

DESTINATIONS = ("duckdb", "postgres", "motherduck", "bigquery", "snowflake")
"""dlt destination names `--destination` accepts."""
TESTED = ("duckdb", "postgres")
"""Destinations the test suite loads into for real; the others are configured only."""
SERVERS_WITH_LOCK = ("postgres",)
CREDENTIALS_SHAPE = {"postgres": ' = "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"'}
"""What a destination's connection string looks like, for messages (never a real one)."""
"""Server destinations whose one-sync-at-a-time rule holds across machines (an advisory lock)."""


@dataclass(frozen=True)
class DestinationChoice:
    """The destination a sync, `views` or `report` uses.

    Attributes:
        name: one of `DESTINATIONS`.
        duckdb_path: the DuckDB file (absolute) when `name` is "duckdb", else None.
        memory_limit: DuckDB's `memory_limit` while loading ("512MB"), or None.
        location: where the data is, without secrets: the DuckDB file, or "host:port/database"
            for a server (dlt's `data_location`), for messages and the working folder's name.
    """

    name: str
    duckdb_path: Path | None = None
    memory_limit: str | None = None
    location: str = ""

    @property
    def is_duckdb_file(self) -> bool:
        return self.name == "duckdb"

    def describe(self) -> str:
        """`postgres at host:5432/db`, or the DuckDB file's path: never a password."""
        if self.is_duckdb_file:
            return str(self.duckdb_path)
        return f"{self.name} at {self.location}" if self.location else self.name


def choose(
    name: str | None, duckdb_path: Path | None = None, memory_limit: str | None = None
) -> DestinationChoice:
    """Check a destination name and, for a server, that dlt finds its credentials.

    Args:
        name: a dlt destination name (`DESTINATIONS`); None = duckdb.
        duckdb_path: the DuckDB file, used when the destination is duckdb.
        memory_limit: DuckDB's memory limit while loading.

    Returns:
        The choice, with `location` filled in (no password).

    Raises:
        ConfigError: an unknown name, or a server destination whose credentials are missing or
            malformed (naming the dlt key, never its value).
    """
    name = (name or "duckdb").strip().lower()
    if name not in DESTINATIONS:
        raise ConfigError(
            f"--destination / destination: unknown destination {name!r}; one of"
            f" {', '.join(DESTINATIONS)}"
        )
    if name == "duckdb":
        path = (duckdb_path or Path("stackai_runs.duckdb")).expanduser().resolve()
        return DestinationChoice(name, path, memory_limit, str(path))
    factory = Destination.from_reference(name)
    try:
        config = factory.configuration(factory.spec()._bind_dataset_name(dataset_name="stackai"))
    except ConfigurationException as exc:
        key = f"destination.{name}.credentials"
        env = f"DESTINATION__{name.upper()}__CREDENTIALS"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        shape = CREDENTIALS_SHAPE.get(name, "")
        raise ConfigError(
            f"{name}: credentials not found or not valid ({_without_secrets(first)}); set"
            f" [{key.rsplit('.', 1)[0]}] credentials{shape} in .dlt/secrets.toml or {env}"
        ) from None
    host = str(getattr(config.credentials, "host", "") or "")
    if "@" in host or "/" in host:
        # "postgresql://me:p@ss@host/db": the URL parser split at the first "@", so part of
        # the password now reads as the host; never show it
        raise ConfigError(
            f"{name}: the connection string's user or password holds an unencoded '@' (or '/'):"
            " percent-encode it ('@' is %40, '/' is %2F)"
        )
    try:
        location = config.data_location()
    except Exception:  # a destination whose location is not one string (BigQuery's project)
        location = ""
    return DestinationChoice(name, None, None, location)


def _without_secrets(text: str) -> str:
    # dlt's messages name fields, not values, but quote the format of a connection string and
    # might quote one: drop anything URL-shaped
    import re

    from pipelines.stackai.http import redact

    return redact(re.sub(r"`?\S+://\S*", "<connection string>", text))


def make_destination(choice: DestinationChoice) -> Any:
    """dlt's destination factory for `choice` (credentials resolved by dlt, as configured)."""
    if choice.is_duckdb_file:
        from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

        config: dict[str, Any] = {"preserve_insertion_order": False}
        if choice.memory_limit:
            config["memory_limit"] = choice.memory_limit
        credentials = DuckDbCredentials(str(choice.duckdb_path), global_config=config)
        # dlt 1.31 leaves DuckDB's `supports_transactions` unset, so a merge without DDL (a
        # table without nested tables) runs its DELETE and INSERT in autocommit: a kill between
        # them leaves the runs deleted until the package is loaded again. DuckDB's transactions
        # are atomic (tests/test_crash.py kills a sync there).
        return dlt.destinations.duckdb(credentials, supports_transactions=True)
    if choice.name == "postgres":
        # dlt's unique constraints on `_dlt_id` make a resumed job's second copy into the staging
        # table (dlt-hub/dlt#3023) fail for good, so the package never loads; without them the
        # copy is removed after the load as on DuckDB (`upkeep`), and `upkeep.index_tables`
        # adds the plain indexes the merges and views need. dlt 1.31 leaves PostgreSQL's
        # `supports_transactions` unset too, with the same effect as on DuckDB (above).
        return dlt.destinations.postgres(create_indexes=False, supports_transactions=True)
    return Destination.from_reference(choice.name)


def pipelines_dir_for(choice: DestinationChoice) -> Path:
    """dlt's working folder for a destination.

    A DuckDB file's sits beside it (`PATH.dlt`); a server's in dlt's data folder
    (`~/.dlt/pipelines/stackai_runs-<name>-<digest of host:port/database>`), one per database,
    so two databases never share local state. Either is a cache: the destination's state is
    the truth (`state.follow_destination`), so a deleted or stale folder is rebuilt from it.
    """
    if choice.is_duckdb_file:
        assert choice.duckdb_path is not None
        return choice.duckdb_path.with_name(choice.duckdb_path.name + ".dlt")
    digest = hashlib.sha256(choice.location.encode()).hexdigest()[:12]
    home = Path(dlt.current.run_context().data_dir)
    return home / "pipelines" / f"stackai_runs-{choice.name}-{digest}"


def lock_for(choice: DestinationChoice, timeout: float) -> AbstractContextManager[None]:
    """The one-sync-at-a-time lock for `choice` (see `pipelines.load.lock`)."""
    from pipelines.load import lock

    if choice.is_duckdb_file:
        assert choice.duckdb_path is not None
        return lock.sync_lock(choice.duckdb_path, timeout)
    if choice.name in SERVERS_WITH_LOCK:
        return lock.postgres_lock(choice, timeout)
    return _working_folder_lock(choice, timeout)


@contextmanager
def _working_folder_lock(choice: DestinationChoice, timeout: float) -> Iterator[None]:
    # No server-side lock for these: one machine's syncs are serialised, not two machines'.
    from pipelines.load import lock

    folder = pipelines_dir_for(choice)
    folder.mkdir(parents=True, exist_ok=True)
    with lock.sync_lock(folder / "sync", timeout, what=choice.describe()):
        yield


def adapt_source(source: Any, pipeline: dlt.Pipeline, report: SyncReport | None = None) -> Any:
    """Fit a `stackai` source's file formats and text to the pipeline's destination.

    On PostgreSQL: Arrow tables load by CSV `COPY` (dlt's parquet path needs the ADBC driver,
    an extra; a 'parquet' hint without it only earns a warning), and NUL characters become
    U+FFFD (`nul.py`). Elsewhere the source is left as it is.

    Returns:
        The same source.
    """
    from pipelines.load.nul import nul_replacer
    from pipelines.stackai import endpoint

    if pipeline.destination is None or pipeline.destination.destination_name != "postgres":
        return source
    for resource in source.resources.values():
        if resource.compute_table_schema().get("file_format") == "parquet":
            resource.apply_hints(file_format="csv")
            resource.apply_hints(
                table_name=endpoint.LLM_USAGE_TABLE, create_table_variant=True, file_format="csv"
            )
            # dlt's PostgreSQL takes no JSON lines: rejects load as INSERTs (NUL replaced below)
            resource.apply_hints(
                table_name=endpoint.REJECTED_TABLE,
                create_table_variant=True,
                file_format="insert_values",
            )
        resource.add_map(nul_replacer(report))
    return source
