"""Flows that come and go: `World.add_flow`, `World.remove_flow`, flow churn in `advance`, and
the org summary (`projects-run-summary`) of an org with more flows than one page, over HTTP."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from pipelines.simulator import FlowInfo, SimulatorServer, World
from pipelines.simulator.catalog import FLOW_NAMES, PROJECT_TYPES, PUBLIC_UI_TYPES
from pipelines.simulator.contract import OPEN_STATES

from .conftest import ANCHOR, Api

SUMMARY_PATH = "/organizations/analytics/projects-run-summary"
SUMMARY_KEYS = [
    "project_id",
    "project_owner",
    "project_type",
    "project_name",
    "total_runs",
    "total_errors",
    "total_tokens",
    "total_users",
    "is_published",
    "public_ui_url",
    "public_ui_type",
]


def summary_pages(api: Api, api_key: str | None = None, **params) -> list[list[dict]]:
    """Every summary page at the default page size, up to and including a short one."""
    pages, page = [], 0
    while True:
        response = api.get(SUMMARY_PATH, api_key=api_key, page=page, **params)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        if len(pages[-1]) < 25:
            return pages
        page += 1


def http_runs(api: Api, flow: FlowInfo, api_key: str | None = None) -> list[dict]:
    """Every run of a flow, read over HTTP page by page."""
    rows, page = [], 0
    while True:
        response = api.get(
            f"/analytics/org/{flow.org_id}/flows/{flow.flow_id}",
            api_key=api_key,
            page=page,
            page_size=100,
        )
        assert response.status_code == 200, response.text
        rows.extend(response.json())
        if len(response.json()) < 100:
            return rows
        page += 1


def totals(runs: list[dict]) -> dict:
    """The summary's figures, counted independently from a flow's runs."""
    return {
        "total_runs": len(runs),
        "total_errors": sum(run["state"] == "FAILED" for run in runs),
        "total_tokens": sum(run["total_tokens"] for run in runs),
        "total_users": len({run["user_id"] for run in runs} - {None}),
    }


def summary_row(world: World, flow_id: str) -> dict:
    rows = world.project_summaries(world.org_ids(), page_size=10_000)
    return next(row for row in rows if row["project_id"] == flow_id)


def listed_ids(world: World) -> list[str]:
    return [row["project_id"] for row in world.project_summaries(world.org_ids(), page_size=10_000)]


def runs_path(flow: FlowInfo) -> str:
    return f"/analytics/org/{flow.org_id}/flows/{flow.flow_id}"


@pytest.fixture(scope="module")
def wide_world() -> World:
    """One org of 32 flows (two summary pages at the default size 25); read-only."""
    return World(seed=21, anchor=ANCHOR, orgs=1, flows_per_org=32, runs_per_flow=5)


@pytest.fixture(scope="module")
def wide_api(wide_world: World) -> Iterator[Api]:
    with SimulatorServer(wide_world) as server:
        client = Api(server)
        yield client
        client.session.close()


class TestAddFlow:
    def test_a_new_flow_like_the_seeded_ones_without_runs(self, world: World):
        org_id = world.org_ids()[0]
        seeded = world.flows()
        info = world.add_flow(org_id)
        assert info.org_id == org_id
        assert info.flow_id == str(uuid.UUID(info.flow_id)) and uuid.UUID(info.flow_id).version == 4
        assert info.flow_id not in {f.flow_id for f in seeded}
        assert world.has_flow(org_id, info.flow_id)
        assert world.runs(org_id, info.flow_id) == [] and world.run_count(org_id, info.flow_id) == 0
        assert world.query_runs(org_id, info.flow_id) == []
        # after the org's seeded flows, before the next org's
        org_flows = [f for f in seeded if f.org_id == org_id]
        others = [f for f in seeded if f.org_id != org_id]
        assert world.flows() == [*org_flows, info, *others]
        assert world.listed_flows() == world.flows()
        assert world.listed_flows(org_id) == [*org_flows, info]

        row = summary_row(world, info.flow_id)
        assert list(row) == SUMMARY_KEYS
        assert row["project_name"] == info.name
        assert totals([]) == {key: row[key] for key in totals([])}
        assert row["project_type"] in PROJECT_TYPES
        assert row["is_published"] == (row["public_ui_url"] is not None)
        assert row["public_ui_type"] in (*PUBLIC_UI_TYPES, None)

    def test_owners_are_members_of_the_org(self, world: World):
        org_id = world.org_ids()[0]
        # Members show in runs they started by hand: ran_by_id is their user_id, the display
        # name their email.
        members = {
            (run["ran_by_id"], run["ran_by_display_name"])
            for org, _, run in world.all_runs()
            if org == org_id and run.get("ran_by_type") == "user"
        }
        owners = set()
        for _ in range(16):
            owner = summary_row(world, world.add_flow(org_id).flow_id)["project_owner"]
            owners.add((owner["user_id"], owner["email"]))
        assert owners <= members
        assert len(owners) > 1, "drawn among the members"

    def test_names_continue_the_org_sequence_and_stay_unique(self, world: World):
        org_id = world.org_ids()[0]
        names = [f.name for f in world.flows() if f.org_id == org_id]
        start = FLOW_NAMES.index(names[0])
        added = [world.add_flow(org_id).name for _ in range(2 * len(FLOW_NAMES))]
        every = names + added
        assert len(set(every)) == len(every)
        assert added[0] == FLOW_NAMES[(start + len(names)) % len(FLOW_NAMES)]
        assert all(name.split(" ")[-1] in ("2", "3") for name in added[-len(FLOW_NAMES) :])

    def test_a_name_taken_by_hand_is_skipped(self, world: World):
        org_id = world.org_ids()[0]
        names = [f.name for f in world.flows() if f.org_id == org_id]
        start = FLOW_NAMES.index(names[0])
        upcoming = FLOW_NAMES[(start + len(names)) % len(FLOW_NAMES)]
        assert world.add_flow(org_id, upcoming).name == upcoming
        assert world.add_flow(org_id).name == FLOW_NAMES[(start + len(names) + 1) % 12]

    def test_explicit_attributes(self, world: World):
        org_id = world.org_ids()[1]
        email = world.project_summaries([org_id])[0]["project_owner"]["email"]
        info = world.add_flow(
            org_id,
            "Weekly KPI digest",
            owner_email=email,
            project_type="agent",
            published=True,
            runs_per_hour=0,
        )
        row = summary_row(world, info.flow_id)
        assert info.name == row["project_name"] == "Weekly KPI digest"
        assert row["project_owner"]["email"] == email
        assert row["project_type"] == "agent"
        assert row["is_published"] and row["public_ui_type"] in PUBLIC_UI_TYPES
        assert row["public_ui_url"].endswith(f"/{org_id}/{info.flow_id}")
        world.advance(24 * 3600)
        assert world.run_count(org_id, info.flow_id) == 0, "runs_per_hour=0: no runs"
        hidden = world.add_flow(org_id, published=False)
        row = summary_row(world, hidden.flow_id)
        assert not row["is_published"] and row["public_ui_url"] is row["public_ui_type"] is None

    def test_bad_arguments(self, world: World):
        org_id = world.org_ids()[0]
        before = listed_ids(world)
        with pytest.raises(KeyError):
            world.add_flow("00000000-0000-4000-8000-000000000000")
        with pytest.raises(ValueError, match="not a member"):
            world.add_flow(org_id, owner_email="nobody@example.com")
        with pytest.raises(ValueError):
            world.add_flow(org_id, "  ")
        with pytest.raises(ValueError):
            world.add_flow(org_id, project_type="")
        with pytest.raises(ValueError):
            world.add_flow(org_id, runs_per_hour=-1)
        assert listed_ids(world) == before

    def test_same_seed_same_calls_same_flows(self):
        worlds = [World(seed=13, anchor=ANCHOR, runs_per_flow=5) for _ in range(2)]
        added = [[w.add_flow(w.org_ids()[i % 2]) for i in range(4)] for w in worlds]
        assert added[0] == added[1]
        for w in worlds:
            w.advance(3 * 3600)
        assert worlds[0].all_runs() == worlds[1].all_runs()
        assert worlds[0].project_summaries(worlds[0].org_ids(), page_size=50) == (
            worlds[1].project_summaries(worlds[1].org_ids(), page_size=50)
        )
        other = World(seed=14, anchor=ANCHOR, runs_per_flow=5)
        assert other.add_flow(other.org_ids()[0]).flow_id not in {f.flow_id for f in added[0]}

    def test_a_flow_without_runs_changes_nothing_else(self):
        plain, grown = (World(seed=17, anchor=ANCHOR, runs_per_flow=30) for _ in range(2))
        silent = grown.add_flow(grown.org_ids()[0], runs_per_hour=0)
        for world in (plain, grown):
            world.advance(5 * 3600, late_feedback=True)
        assert [f for f in grown.flows() if f != silent] == plain.flows()
        assert grown.all_runs() == plain.all_runs()

    def test_advance_gives_an_added_flow_runs(self, world: World):
        org_id = world.org_ids()[0]
        added_at = world.now
        info = world.add_flow(org_id, runs_per_hour=5)
        world.advance(6 * 3600)
        runs = world.runs(org_id, info.flow_id)
        assert len(runs) >= 5
        assert all(added_at < world.run_instant(run["run_id"]) <= world.now for run in runs)
        row = summary_row(world, info.flow_id)
        assert {key: row[key] for key in totals(runs)} == totals(runs)
        world.add_run(org_id, info.flow_id, state="FAILED")
        assert summary_row(world, info.flow_id)["total_errors"] == totals(runs)["total_errors"] + 1

    def test_added_flows_join_sub_workflows(self):
        world = World(seed=2, anchor=ANCHOR, orgs=1, flows_per_org=2, runs_per_flow=5)
        added = {world.add_flow(world.org_ids()[0], runs_per_hour=6).flow_id for _ in range(3)}
        world.advance(48 * 3600)
        linked = [
            run
            for _, flow_id, run in world.all_runs()
            if run.get("parent_run_id")
            and (flow_id in added or run.get("parent_project_id") in added)
        ]
        assert linked


class TestRemoveFlow:
    def test_gone_from_the_api_kept_as_ground_truth(self, world: World):
        gone, kept = world.flows()[0], world.flows()[1]
        had = world.runs(gone.org_id, gone.flow_id)
        count = len(world.all_runs())
        assert world.remove_flow(gone.flow_id) == gone
        assert gone not in world.flows() and world.removed_flows() == [gone]
        assert gone not in world.listed_flows()
        assert gone.flow_id not in listed_ids(world)
        assert not world.has_flow(gone.org_id, gone.flow_id)
        with pytest.raises(KeyError):
            world.query_runs(gone.org_id, gone.flow_id)
        assert world.runs(gone.org_id, gone.flow_id) == had
        assert world.run_count(gone.org_id, gone.flow_id) == len(had)
        assert world.get_run(had[0]["run_id"]) == had[0]
        assert len(world.all_runs()) == count - len(had)
        with pytest.raises(KeyError):
            world.add_run(gone.org_id, gone.flow_id)
        with pytest.raises(KeyError):
            world.update_run(had[0]["run_id"], feedback="late")
        with pytest.raises(KeyError):
            world.set_feedback(had[0]["run_id"], "late")
        assert world.has_flow(kept.org_id, kept.flow_id)

    def test_no_new_runs_and_open_runs_stay_open(self, world: World):
        gone = world.flows()[0]
        opened = world.add_run(gone.org_id, gone.flow_id, state="PENDING")
        had = world.runs(gone.org_id, gone.flow_id)
        world.remove_flow(gone.flow_id)
        with pytest.raises(KeyError):
            world.complete_run(opened["run_id"])
        world.advance(12 * 3600, late_feedback=True)
        assert world.runs(gone.org_id, gone.flow_id) == had
        assert world.get_run(opened["run_id"])["state"] in OPEN_STATES

    def test_still_listed_when_deleted_between_the_two_calls(self, world: World):
        gone = world.flows()[2]
        had = world.runs(gone.org_id, gone.flow_id)
        before = listed_ids(world)
        world.remove_flow(gone.flow_id, from_summary=False)
        assert listed_ids(world) == before, "same rows, same order"
        assert gone in world.listed_flows() and gone not in world.flows()
        assert world.removed_flows() == [gone]
        assert not world.has_flow(gone.org_id, gone.flow_id)
        row = summary_row(world, gone.flow_id)
        assert {key: row[key] for key in totals(had)} == totals(had)
        world.remove_flow(gone.flow_id, from_summary=False)  # no change
        assert gone in world.listed_flows()
        world.remove_flow(gone.flow_id)  # now off the summary too
        assert gone.flow_id not in listed_ids(world)
        world.remove_flow(gone.flow_id, from_summary=False)  # never listed again
        assert gone.flow_id not in listed_ids(world)
        assert world.removed_flows() == [gone]

    def test_unknown_flow(self, world: World):
        with pytest.raises(KeyError):
            world.remove_flow("00000000-0000-4000-8000-000000000000")

    def test_an_added_flow_can_be_removed(self, world: World):
        info = world.add_flow(world.org_ids()[1])
        world.advance(3600)
        world.remove_flow(info.flow_id)
        assert info not in world.flows() and world.removed_flows() == [info]
        assert info.flow_id not in listed_ids(world)


class TestChurn:
    def test_off_by_default(self):
        plain, churned = (World(seed=19, anchor=ANCHOR, runs_per_flow=20) for _ in range(2))
        plain.advance(6 * 3600, late_feedback=True)
        churned.advance(
            6 * 3600, late_feedback=True, new_flows_per_hour=0, removed_flows_per_hour=0
        )
        assert plain.flows() == churned.flows() and plain.all_runs() == churned.all_runs()

    def test_flows_appear_and_disappear_as_the_clock_moves(self):
        world = World(seed=23, anchor=ANCHOR, runs_per_flow=5)
        seeded = world.flows()
        start = world.now
        for _ in range(24):
            world.advance(3600, new_flows_per_hour=0.25, removed_flows_per_hour=0.1)
        added = [f for f in world.flows() + world.removed_flows() if f not in seeded]
        assert added and world.removed_flows()
        assert listed_ids(world) == [f.flow_id for f in world.flows()]
        for org_id in world.org_ids():
            assert any(f.org_id == org_id for f in world.flows()), "never the last flow"
        with_runs = [f for f in added if world.run_count(f.org_id, f.flow_id)]
        assert with_runs
        for flow in added:
            for run in world.runs(flow.org_id, flow.flow_id):
                assert start < world.run_instant(run["run_id"]) <= world.now
        for org_id in world.org_ids():
            names = [f.name for f in world.flows() + world.removed_flows() if f.org_id == org_id]
            assert len(names) == len(set(names)), "unique in each org"

    def test_churn_is_deterministic(self):
        worlds = [World(seed=29, anchor=ANCHOR, runs_per_flow=5) for _ in range(2)]
        for w in worlds:
            w.advance(30 * 3600, new_flows_per_hour=0.2, removed_flows_per_hour=0.1)
        assert worlds[0].flows() == worlds[1].flows()
        assert worlds[0].removed_flows() == worlds[1].removed_flows()
        assert worlds[0].all_runs() == worlds[1].all_runs()

    def test_an_org_keeps_its_last_flow(self):
        world = World(seed=31, anchor=ANCHOR, orgs=1, flows_per_org=2, runs_per_flow=5)
        world.advance(48 * 3600, removed_flows_per_hour=2)
        assert len(world.flows()) == 1 and len(world.removed_flows()) == 1

    def test_bad_rates(self, world: World):
        with pytest.raises(ValueError):
            world.advance(60, new_flows_per_hour=-1)
        with pytest.raises(ValueError):
            world.advance(60, removed_flows_per_hour=float("nan"))
        assert world.now == ANCHOR


def test_flow_changes_and_reads_are_thread_safe(world: World):
    org_id = world.org_ids()[0]
    errors: list[BaseException] = []
    made: list[FlowInfo] = []

    def writer() -> None:
        try:
            for _ in range(40):
                info = world.add_flow(org_id)
                made.append(info)
                world.add_run(org_id, info.flow_id)
                world.remove_flow(info.flow_id, from_summary=len(made) % 2 == 0)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(40):
        world.flows()
        world.project_summaries(world.org_ids(), page_size=1000)
        world.advance(30, new_flows_per_hour=10, removed_flows_per_hour=5)
    for thread in threads:
        thread.join()
    assert not errors
    assert len({f.flow_id for f in made}) == 120
    assert all(f in world.removed_flows() for f in made)


class TestWideOrgOverHttp:
    def test_two_summary_pages_at_the_default_size(self, wide_api: Api, wide_world: World):
        org_id = wide_world.org_ids()[0]
        for key in (wide_world.api_key, wide_world.org_api_keys[org_id]):
            pages = summary_pages(wide_api, api_key=key)
            assert [len(page) for page in pages] == [25, 7]
            assert wide_api.get(SUMMARY_PATH, api_key=key, page=2).json() == []
            rows = [row for page in pages for row in page]
            assert [row["project_id"] for row in rows] == [f.flow_id for f in wide_world.flows()]
            assert [row["project_name"] for row in rows] == [f.name for f in wide_world.flows()]
        names = [f.name for f in wide_world.flows()]
        assert len(names) == 32 == len(set(names))

    def test_totals_equal_counts_over_each_flows_runs(self, wide_api: Api, wide_world: World):
        rows = [row for page in summary_pages(wide_api) for row in page]
        for row, flow in zip(rows, wide_world.flows(), strict=True):
            runs = http_runs(wide_api, flow)
            assert {key: row[key] for key in totals(runs)} == totals(runs)
            assert row["total_runs"] == wide_world.run_count(flow.org_id, flow.flow_id)
        assert sum(row["total_errors"] for row in rows) > 0
        assert sum(row["total_users"] for row in rows) > 0

    def test_owners_are_members_and_rows_are_complete(self, wide_api: Api, wide_world: World):
        rows = [row for page in summary_pages(wide_api) for row in page]
        domains = {row["project_owner"]["email"].split("@")[1] for row in rows}
        assert len(domains) == 1
        assert len({row["project_owner"]["user_id"] for row in rows}) > 1
        for row in rows:
            assert list(row) == SUMMARY_KEYS
            assert row["is_published"] == (row["public_ui_url"] is not None)
        assert {row["project_type"] for row in rows} == set(PROJECT_TYPES)


@pytest.fixture
def wide() -> Iterator[tuple[Api, World]]:
    """A fresh 30-flow org a test may change, served over HTTP."""
    world = World(seed=37, anchor=ANCHOR, orgs=1, flows_per_org=30, runs_per_flow=5)
    with SimulatorServer(world) as server:
        client = Api(server)
        yield client, world
        client.session.close()


class TestFlowChangesOverHttp:
    def test_an_added_flow_is_listed_and_served(self, wide: tuple[Api, World]):
        api, world = wide
        org_id = world.org_ids()[0]
        info = world.add_flow(org_id)
        pages = summary_pages(api)
        assert [len(page) for page in pages] == [25, 6]
        assert pages[-1][-1]["project_id"] == info.flow_id
        assert pages[-1][-1]["project_name"] == info.name
        assert pages[-1][-1]["total_runs"] == 0
        response = api.runs_page(org_id, info.flow_id)
        assert response.status_code == 200 and response.json() == []
        world.advance(6 * 3600)
        runs = http_runs(api, info)
        assert runs
        row = next(
            r for page in summary_pages(api) for r in page if r["project_id"] == info.flow_id
        )
        assert {key: row[key] for key in totals(runs)} == totals(runs)

    def test_a_removed_flow_answers_404_and_leaves_the_summary(self, wide: tuple[Api, World]):
        api, world = wide
        gone = world.flows()[4]
        assert api.runs_page(gone.org_id, gone.flow_id).status_code == 200
        world.remove_flow(gone.flow_id)
        for key in (None, world.org_api_keys[gone.org_id]):
            response = api.runs_page(gone.org_id, gone.flow_id, api_key=key)
            assert response.status_code == 404
            assert response.json() == {"detail": "Flow not found"}
        ids = [row["project_id"] for page in summary_pages(api) for row in page]
        assert len(ids) == 29 and gone.flow_id not in ids

    def test_a_listed_flow_that_answers_404(self, wide: tuple[Api, World]):
        api, world = wide
        gone = world.flows()[27]
        world.remove_flow(gone.flow_id, from_summary=False)
        ids = [row["project_id"] for page in summary_pages(api) for row in page]
        assert len(ids) == 30 and gone.flow_id in ids
        assert api.runs_page(gone.org_id, gone.flow_id).status_code == 404

    def test_removed_while_paging(self, wide: tuple[Api, World]):
        api, world = wide
        flow = world.flows()[0]

        def remove_before_second_page(org_id: str, flow_id: str, params: dict) -> None:
            if params.get("page") == "1":
                world.remove_flow(flow_id)

        world.before_page = remove_before_second_page
        assert api.runs_page(flow.org_id, flow.flow_id, page=0, page_size=2).status_code == 200
        response = api.runs_page(flow.org_id, flow.flow_id, page=1, page_size=2)
        assert response.status_code == 404
        assert response.json() == {"detail": "Flow not found"}
        assert world.requests[-1]["status"] == 404

    def test_flows_added_by_the_clock_are_listed_and_served(self, wide: tuple[Api, World]):
        api, world = wide
        for _ in range(12):
            world.advance(3600, new_flows_per_hour=0.5)
        added = world.flows()[30:]
        assert added
        rows = [row for page in summary_pages(api) for row in page]
        assert [row["project_id"] for row in rows] == [f.flow_id for f in world.flows()]
        for flow in added:
            row = next(r for r in rows if r["project_id"] == flow.flow_id)
            assert {key: row[key] for key in totals(http_runs(api, flow))} == totals(
                http_runs(api, flow)
            )

    def test_wrong_org_is_403_for_listed_flows(self, wide: tuple[Api, World]):
        # What a client's `--org` typo meets: the summary (the key's org) lists flows, and
        # reading one of them under another org id is refused, not "not found".
        api, world = wide
        project_id = summary_pages(api)[0][0]["project_id"]
        for key in (None, world.org_api_keys[world.org_ids()[0]]):
            response = api.runs_page(
                "00000000-0000-4000-8000-000000000000", project_id, api_key=key
            )
            assert response.status_code == 403

    def test_summary_window_still_filters(self, wide: tuple[Api, World]):
        api, world = wide
        start = ANCHOR - timedelta(days=10)
        rows = [row for page in summary_pages(api, start_date=start.isoformat()) for row in page]
        assert len(rows) == 30
        for row, flow in zip(rows, world.flows(), strict=True):
            runs = [
                run
                for run in world.runs(flow.org_id, flow.flow_id)
                if world.run_instant(run["run_id"]) >= start
            ]
            assert {key: row[key] for key in totals(runs)} == totals(runs)
