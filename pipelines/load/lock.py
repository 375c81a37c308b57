"""One sync per DuckDB file at a time: a lock file beside it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


class SyncLocked(RuntimeError):
    """Another sync holds the DuckDB file's lock and did not release it within `lock_timeout`."""


def lock_path_for(duckdb_path: Path) -> Path:
    """The lock file that serialises syncs of one DuckDB file (`PATH.lock`)."""
    return duckdb_path.with_name(duckdb_path.name + ".lock")


@contextmanager
def sync_lock(duckdb_path: Path, timeout: float) -> Iterator[None]:
    """Hold the DuckDB file's sync lock: one sync (or demo) per file at a time.

    Args:
        duckdb_path: The DuckDB file (its folder must exist).
        timeout: Seconds to wait for another sync to finish; 0 = do not wait.

    Raises:
        SyncLocked: the lock is held by another process after `timeout` seconds.
    """
    lock = FileLock(str(lock_path_for(duckdb_path)))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        waited = f" after waiting {timeout:g} s" if timeout else ""
        raise SyncLocked(
            f"another stackai-runs sync is using {duckdb_path}{waited}; this run did nothing"
            " (raise [sources.stackai] lock_timeout to wait longer)"
        ) from None
    try:
        yield
    finally:
        lock.release()
