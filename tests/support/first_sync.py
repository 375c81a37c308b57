"""A first, healthy sync made once and copied: many tests start from "the world, synced once",
then do what they test (kill the next sync, send it a signal...). The first test to ask syncs
for real and keeps a copy of what that sync left: the DuckDB file or PostgreSQL database (a
template copy) and dlt's working folder; a later test asking for the same first sync of the
same world (same runs, flows and clock) with the same settings gets that copy put in place of
its own empty destination, byte for byte, instead of a sync that would give the same.

A world with anything that makes a sync differ besides its runs (faults queued, a page hook,
caps, a rate limit) is synced for real every time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

from pipelines.load import run_sync
from pipelines.load.destination import pipelines_dir_for
from pipelines.settings import SyncSettings
from pipelines.simulator import World
from tests.support import store

CREDENTIALS = "DESTINATION__POSTGRES__CREDENTIALS"
_WHERE = {"base_url", "api_key", "duckdb_path", "destination"}


@dataclass(frozen=True)
class _Kept:
    destination: str
    """The DuckDB file's copy, or the template database's name."""
    working_folder: Path | None


class FirstSyncs:
    """See the module's docstring; one per test session (`first_sync` fixture, conftest)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._kept: dict[str, _Kept] = {}

    def sync(self, settings: SyncSettings, world: World) -> None:
        """`run_sync(settings, now=world.now)`, which must succeed, into the settings' empty
        destination, or its copy."""
        key = _key(settings, world)
        kept = self._kept.get(key) if key else None
        if kept is not None:
            _put_back(kept, settings)
            return
        report = run_sync(settings, now=world.now)
        assert report.ok, report
        if key:
            self._kept[key] = self._keep(settings, key)

    def _keep(self, settings: SyncSettings, key: str) -> _Kept:
        folder = self._folder / key[:16]
        folder.mkdir()
        working = pipelines_dir_for(settings.target())
        kept_working = None
        if working.exists():
            kept_working = folder / "working"
            shutil.copytree(working, kept_working, symlinks=True)
        if settings.target().name == "postgres":
            url = os.environ[CREDENTIALS]
            name = f"{url.rsplit('/', 1)[1]}_first"
            store.clone_database(url, name)
            return _Kept(name, kept_working)
        path = settings.target().duckdb_path
        assert path is not None
        assert not path.with_name(path.name + ".wal").exists(), "a DuckDB file left unclosed"
        shutil.copyfile(path, folder / path.name)
        return _Kept(str(folder / path.name), kept_working)


def _put_back(kept: _Kept, settings: SyncSettings) -> None:
    target = settings.target()
    if target.name == "postgres":
        store.restore(settings, kept.destination)  # drops the test's empty database
    else:
        assert target.duckdb_path is not None and not target.duckdb_path.exists()
        target.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept.destination, target.duckdb_path)
    if kept.working_folder is not None:
        working = pipelines_dir_for(target)
        assert not working.exists(), f"{working}: not a new destination"
        shutil.copytree(kept.working_folder, working, symlinks=True)


def _key(settings: SyncSettings, world: World) -> str | None:
    """What the first sync's result depends on, hashed; None when it may depend on more."""
    plain = (
        world.before_page is None
        and world.page_size_cap is None
        and world.page_size_limit is None
        and world.concurrency_limit is None
        and not world.fault_rate
        and not world._faults
        and world._key_uses_left is None
        and settings.target().name in ("duckdb", "postgres")
    )
    if not plain:
        return None
    # The settings but where they point (each test's own simulator, file or database)
    where_not = [
        (f.name, getattr(settings, f.name)) for f in fields(settings) if f.name not in _WHERE
    ]
    text = repr(
        (
            settings.target().name,
            where_not,
            world.api_key == settings.api_key,
            world.now,
            world.sort_order,
            world.parent_style,
            [(f.org_id, f.flow_id, f.name) for f in world.flows()],
            [(f.org_id, f.flow_id) for f in world.removed_flows()],
            world.all_runs(),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()
