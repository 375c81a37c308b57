"""One sync per destination at a time: a lock file beside a DuckDB file, an advisory lock in a
PostgreSQL database (held by whichever machine syncs it)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

if TYPE_CHECKING:
    from pipelines.load.destination import DestinationChoice

log = logging.getLogger(__name__)


class SyncLocked(RuntimeError):
    """Another sync holds the destination's lock and did not release it within `lock_timeout`."""


class DestinationUnreachable(RuntimeError):
    """The destination's server refused the connection the lock needs (host, port, password,
    database, privileges); the message names host and database, never the password."""


def _locked_message(what: str, timeout: float) -> str:
    waited = f" after waiting {timeout:g} s" if timeout else ""
    return (
        f"another stackai-runs sync is using {what}{waited}; this run did nothing"
        " (raise [sources.stackai] lock_timeout to wait longer)"
    )


def lock_path_for(duckdb_path: Path) -> Path:
    """The lock file that serialises syncs of one DuckDB file (`PATH.lock`)."""
    return duckdb_path.with_name(duckdb_path.name + ".lock")


@contextmanager
def sync_lock(duckdb_path: Path, timeout: float, what: str | None = None) -> Iterator[None]:
    """Hold the DuckDB file's sync lock: one sync (or demo) per file at a time.

    Args:
        duckdb_path: The DuckDB file (its folder must exist); the lock is `PATH.lock`.
        timeout: Seconds to wait for another sync to finish; 0 = do not wait.
        what: What the lock guards, for the message; default the path.

    Raises:
        SyncLocked: the lock is held by another process after `timeout` seconds.
    """
    lock = FileLock(str(lock_path_for(duckdb_path)))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise SyncLocked(_locked_message(what or str(duckdb_path), timeout)) from None
    try:
        yield
    finally:
        lock.release()


ADVISORY_LOCK_KEY = "stackai_runs/stackai"
"""Hashed (`hashtextextended`) into the bigint key of the advisory lock: one per database."""


@contextmanager
def postgres_lock(choice: DestinationChoice, timeout: float) -> Iterator[None]:
    """Hold a session-level advisory lock in the PostgreSQL database `choice` names.

    Every machine that syncs the database takes the same lock, so two syncs never load at once
    wherever they run; the server releases it when the holder's connection ends, a killed
    process included. The connection is dlt's credentials' own, opened for the lock alone.

    Args:
        choice: A postgres destination (credentials resolved by dlt).
        timeout: Seconds to wait for another sync to finish; 0 = do not wait.

    Raises:
        SyncLocked: another sync holds the lock after `timeout` seconds.
        DestinationUnreachable: the connection failed (one line, no password).
    """
    import psycopg2
    from dlt.common.destination import Destination

    factory = Destination.from_reference("postgres")
    credentials = factory.configuration(
        factory.spec()._bind_dataset_name(dataset_name="stackai")
    ).credentials
    try:
        connection = psycopg2.connect(credentials.to_native_representation())
    except psycopg2.Error as exc:
        raise DestinationUnreachable(
            f"cannot connect to {choice.describe()}: {_first_line(exc)}"
        ) from None
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            if timeout:
                # lock_timeout bounds the wait for any lock, advisory ones included
                cursor.execute("select set_config('lock_timeout', %s, false)", (f"{timeout}s",))
                try:
                    cursor.execute(
                        "select pg_advisory_lock(hashtextextended(%s, 0))", (ADVISORY_LOCK_KEY,)
                    )
                except psycopg2.errors.LockNotAvailable:
                    raise SyncLocked(_locked_message(choice.describe(), timeout)) from None
            else:
                cursor.execute(
                    "select pg_try_advisory_lock(hashtextextended(%s, 0))", (ADVISORY_LOCK_KEY,)
                )
                if not cursor.fetchone()[0]:
                    raise SyncLocked(_locked_message(choice.describe(), timeout))
        log.debug("advisory lock taken in %s", choice.describe())
        yield
    finally:
        connection.close()  # ends the session: the server releases the lock


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
