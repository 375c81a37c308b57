"""Simulator data at benchmark scale: a `World` that grows by cloning and pages in O(page).

The stock `World` is built for tests: it generates ~15,000 runs/s (1M runs take ~70 s and
~2.3 GB) and `query_runs` filters and sorts a flow's whole history for every page, so paging a
flow of n runs costs O(n^2 / page_size): a 500,000-run flow at page_size 1000 would keep the
simulator busy for minutes per flow, and the benchmark would measure the simulator, not the
sync. `BenchWorld` changes only how fast the simulator answers, never what it answers:

- `grow(copies)` clones every generated run `copies - 1` times under a new seeded `run_id` (same
  flow, date, state, tokens, usage), so a 1M-run world costs one 100k-run generation plus cheap
  dict copies;
- `query_runs` keeps each flow's runs sorted once (re-sorted when the flow's run count changes)
  and slices a page by binary search on the date bounds; filters on `user_id` or `state`, and
  the "unordered" sort order, fall back to the stock implementation;
- `_served` copies a run with plain dict/list copies instead of `copy.deepcopy` (the values are
  JSON scalars, plus the `llm_usage` list of flat dicts).

It reaches into `World`'s private attributes (`_flow_runs`, `_runs`, `_open`, `_Run`): this is
benchmark code, pinned to the simulator it ships with. Ground truth helpers (`truth_of`) read the
same attributes, without the deep copies of `World.runs`.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipelines.simulator import World, runs
from pipelines.simulator import world as world_module
from pipelines.simulator.contract import OPEN_STATES


class BenchWorld(World):
    """A `World` (same constructor) that can `grow` and pages in O(page_size)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._order: dict[str, tuple[int, list[Any], list[datetime]]] = {}
        self._clone_rng = random.Random(f"stackai-bench:{kwargs.get('seed', 0)}:clones")
        super().__init__(*args, **kwargs)
        self._generated = {flow_id: list(items) for flow_id, items in self._flow_runs.items()}

    def trim(self, runs_per_flow: int) -> None:
        """Keep each flow's newest `runs_per_flow` runs (a flow with fewer keeps them all), so
        that flows have equal sizes; later `grow` calls clone what is kept."""
        with self._lock:
            for flow_id, items in self._flow_runs.items():
                ordered = sorted(items, key=world_module._chronological, reverse=True)
                for run in ordered[runs_per_flow:]:
                    del self._runs[run.run_id]
                    self._open.pop(run.run_id, None)
                kept = {run.run_id for run in ordered[:runs_per_flow]}
                self._flow_runs[flow_id] = [run for run in items if run.run_id in kept]
            self._generated = {flow_id: list(items) for flow_id, items in self._flow_runs.items()}
            self._order.clear()

    def grow(self, copies: int) -> None:
        """Make each flow hold `copies` times its generated runs (clones get new run_ids)."""
        with self._lock:
            for flow_id, originals in self._generated.items():
                have = len(self._flow_runs[flow_id]) // max(1, len(originals))
                for _ in range(have, copies):
                    for run in originals:
                        self._add_clone(run)

    def _add_clone(self, run: Any) -> None:
        data = dict(run.data)
        data["run_id"] = runs.new_uuid(self._clone_rng)
        clone = world_module._Run(
            org_id=run.org_id,
            flow_id=run.flow_id,
            instant=run.instant,
            data=data,
            shuffle_key=hashlib.sha256(f"{self.seed}:{data['run_id']}".encode()).digest(),
        )
        self._runs[clone.run_id] = clone
        self._flow_runs[clone.flow_id].append(clone)
        if data["state"] in OPEN_STATES:
            self._open[clone.run_id] = clone

    def query_runs(
        self,
        org_id: str,
        flow_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        user_id: str | None = None,
        states: Iterable[str] | None = None,
        page: int = 0,
        page_size: int = 25,
    ) -> list[dict]:
        if user_id is not None or states is not None or self.sort_order == "unordered":
            return super().query_runs(
                org_id,
                flow_id,
                start=start,
                end=end,
                user_id=user_id,
                states=states,
                page=page,
                page_size=page_size,
            )
        start = None if start is None else world_module.dates.as_utc(start)
        end = None if end is None else world_module.dates.as_utc(end)
        with self._lock:
            ordered, instants = self._ascending(org_id, flow_id)
            lo = 0 if start is None else bisect.bisect_left(instants, start)
            hi = len(instants) if end is None else bisect.bisect_right(instants, end)
            if self.sort_order == "oldest_first":
                a = lo + page * page_size
                chosen = ordered[a : min(hi, a + page_size)]
            else:  # newest_first
                b = hi - page * page_size
                chosen = ordered[max(lo, b - page_size) : b][::-1] if b > lo else []
            return [self._served(run) for run in chosen]

    def _ascending(self, org_id: str, flow_id: str) -> tuple[list[Any], list[datetime]]:
        items = self._runs_of(org_id, flow_id)
        cached = self._order.get(flow_id)
        if cached is None or cached[0] != len(items):
            ordered = sorted(items, key=world_module._chronological)
            cached = (len(items), ordered, [run.instant for run in ordered])
            self._order[flow_id] = cached
        return cached[1], cached[2]

    def _served(self, run: Any) -> dict:
        if run.extra or self.parent_style != "flat":
            return super()._served(run)
        served = dict(run.data)
        usage = served.get("llm_usage")
        if usage:
            served["llm_usage"] = [dict(item) for item in usage]
        return served


@dataclass(frozen=True)
class Truth:
    """What a correct load of some flows must contain (from the simulator, not from DuckDB)."""

    runs: int
    ids_md5: str
    """md5 of the sorted lowercase run_ids joined by ","."""
    total_tokens: int
    usage_rows: int
    runs_per_flow: dict[str, int]
    """`ORG_ID/FLOW_ID` -> runs."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "ids_md5": self.ids_md5,
            "total_tokens": self.total_tokens,
            "usage_rows": self.usage_rows,
        }


def truth_of(world: World, flows: Iterable[tuple[str, str]] | None = None) -> Truth:
    """Ground truth for `flows` ((org_id, flow_id) pairs; default every flow), as of `world.now`.

    Only runs dated at or before `world.now` count (a sync pins its end there).
    """
    wanted = [(f.org_id, f.flow_id) for f in world.flows()] if flows is None else list(flows)
    ids: list[str] = []
    tokens = usage = 0
    per_flow: dict[str, int] = {}
    with world._lock:
        for org_id, flow_id in wanted:
            count = 0
            for run in world._runs_of(org_id, flow_id):
                if run.instant > world.now:
                    continue
                data = run.data
                ids.append(data["run_id"].lower())
                tokens += data.get("total_tokens") or 0
                usage += len(data.get("llm_usage") or ())
                count += 1
            per_flow[f"{org_id}/{flow_id}"] = count
    ids.sort()
    digest = hashlib.md5(",".join(ids).encode()).hexdigest()
    return Truth(len(ids), digest, tokens, usage, per_flow)


def min_requests(runs_per_flow: Iterable[int], page_size: int) -> int:
    """The fewest requests a first sync can make: every page, the final short or empty one
    included (a flow of n runs needs ceil((n + 1) / page_size) pages)."""
    return sum(-(-(n + 1) // page_size) for n in runs_per_flow)


def served_pages(world: World, org_id: str, flow_id: str, page_size: int) -> list[bytes]:
    """A flow's whole history as the API pages it (newest first), as JSON bytes per page: what a
    client has after fetching every page, the final short (or empty) page included."""
    from pipelines.simulator.faults import json_body

    with world._lock:
        ordered = sorted(world._runs_of(org_id, flow_id), key=world_module._chronological)
        ordered = [run for run in reversed(ordered) if run.instant <= world.now]
        served = [world._served(run) for run in ordered]
    pages = [json_body(served[i : i + page_size]) for i in range(0, len(served), page_size)] or [
        json_body([])
    ]
    if len(served) and len(served) % page_size == 0:
        pages.append(json_body([]))
    return pages


__all__ = ["BenchWorld", "Truth", "min_requests", "served_pages", "truth_of"]
