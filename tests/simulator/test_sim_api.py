"""The simulator over real HTTP: paging, filters, validation, auth, ordering, hooks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.simulator import SimulatorServer, World
from pipelines.simulator.contract import WorkflowState

from .conftest import ANCHOR, Api

SUMMARY_PATH = "/organizations/analytics/projects-run-summary"


def ids(rows: list[dict]) -> list[str]:
    return [row["run_id"] for row in rows]


def iso(instant: datetime) -> str:
    return instant.isoformat()


class TestPaging:
    def test_defaults_page_0_size_25(self, big_api: Api, big_world: World):
        flow = big_world.flows()[0]
        response = big_api.runs_page(flow.org_id, flow.flow_id)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert ids(response.json()) == ids(big_world.runs(flow.org_id, flow.flow_id)[:25])

    def test_pages_partition_all_runs(self, big_api: Api, big_world: World):
        flow = big_world.flows()[2]
        pages = big_api.pages(flow.org_id, flow.flow_id, page_size=100)
        assert pages[-1] == [] and all(len(page) == 100 for page in pages[:-2])
        assert 0 < len(pages[-2]) <= 100
        served = [row for page in pages for row in page]
        assert served == big_world.runs(flow.org_id, flow.flow_id)

    def test_page_past_the_end_is_empty(self, big_api: Api, big_world: World):
        flow = big_world.flows()[1]
        response = big_api.runs_page(flow.org_id, flow.flow_id, page=10_000, page_size=50)
        assert response.status_code == 200 and response.json() == []
        assert response.text == "[]"

    def test_page_size_has_no_maximum(self, big_api: Api, big_world: World):
        flow = big_world.flows()[3]
        rows = big_api.runs_page(flow.org_id, flow.flow_id, page_size=100_000).json()
        assert len(rows) == big_world.run_count(flow.org_id, flow.flow_id) > 280


class TestFilters:
    def test_start_and_end_are_inclusive_on_the_instant(self, big_api: Api, big_world: World):
        flow = big_world.flows()[0]
        runs = big_world.runs(flow.org_id, flow.flow_id)
        first, last = runs[40], runs[10]  # newest first: runs[10] is newer
        start, end = (big_world.run_instant(r["run_id"]) for r in (first, last))
        rows = big_api.runs_page(
            flow.org_id, flow.flow_id, start_date=iso(start), end_date=iso(end), page_size=500
        ).json()
        expected = [r for r in runs if start <= big_world.run_instant(r["run_id"]) <= end]
        assert ids(rows) == ids(expected)
        assert rows[0]["run_id"] == last["run_id"] and rows[-1]["run_id"] == first["run_id"]

    def test_naive_query_dates_are_utc(self, big_api: Api, big_world: World):
        flow = big_world.flows()[0]
        target = big_world.runs(flow.org_id, flow.flow_id)[20]
        instant = big_world.run_instant(target["run_id"])
        for text in (
            instant.replace(tzinfo=None).isoformat(),
            instant.isoformat(),
            instant.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            instant.astimezone(timezone(timedelta(hours=2))).isoformat(),
        ):
            rows = big_api.runs_page(
                flow.org_id, flow.flow_id, start_date=text, end_date=text
            ).json()
            assert ids(rows) == [target["run_id"]], text

    def test_user_id(self, big_api: Api, big_world: World):
        flow = big_world.flows()[4]
        runs = big_world.runs(flow.org_id, flow.flow_id)
        user = next(r["user_id"] for r in runs if r["user_id"])
        rows = big_api.runs_page(flow.org_id, flow.flow_id, user_id=user, page_size=1000).json()
        assert rows and ids(rows) == ids([r for r in runs if r["user_id"] == user])

    def test_state_list(self, big_api: Api, big_world: World):
        flow = big_world.flows()[5]
        runs = big_world.runs(flow.org_id, flow.flow_id)
        rows = big_api.runs_page(
            flow.org_id, flow.flow_id, state="FAILED, CANCELLED", page_size=1000
        ).json()
        assert rows and ids(rows) == ids([r for r in runs if r["state"] in ("FAILED", "CANCELLED")])

    def test_filters_combine(self, big_api: Api, big_world: World):
        flow = big_world.flows()[1]
        runs = big_world.runs(flow.org_id, flow.flow_id)
        start = ANCHOR - timedelta(days=10)
        rows = big_api.runs_page(
            flow.org_id, flow.flow_id, start_date=iso(start), state="COMPLETED", page_size=1000
        ).json()
        expected = [
            r
            for r in runs
            if r["state"] == "COMPLETED" and big_world.run_instant(r["run_id"]) >= start
        ]
        assert rows and ids(rows) == ids(expected)

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        page_size=st.integers(1, 40),
        start_days=st.one_of(st.none(), st.floats(0, 30)),
        span_days=st.one_of(st.none(), st.floats(0, 30)),
        states=st.one_of(st.none(), st.sets(st.sampled_from(list(WorkflowState)), min_size=1)),
    )
    def test_pages_partition_the_filtered_set(
        self, small_api: Api, page_size, start_days, span_days, states
    ):
        world = small_api.server.world
        flow = world.flows()[0]
        start = None if start_days is None else ANCHOR - timedelta(days=start_days)
        end = None if span_days is None or start is None else start + timedelta(days=span_days)
        params = {}
        if start:
            params["start_date"] = iso(start)
        if end:
            params["end_date"] = iso(end)
        if states:
            params["state"] = ",".join(states)
        served = [
            row
            for page in small_api.pages(flow.org_id, flow.flow_id, page_size, **params)
            for row in page
        ]
        expected = world.query_runs(
            flow.org_id, flow.flow_id, start=start, end=end, states=states, page_size=10**6
        )
        assert ids(served) == ids(expected)
        assert len(set(ids(served))) == len(served)


@pytest.fixture(scope="module")
def small_api():
    with SimulatorServer(World(seed=21, anchor=ANCHOR, runs_per_flow=40)) as server:
        yield Api(server)


class TestValidationErrors:
    @pytest.mark.parametrize(
        ("params", "loc", "error_type"),
        [
            ({"page": -1}, ["query", "page"], "greater_than_equal"),
            ({"page_size": 0}, ["query", "page_size"], "greater_than_equal"),
            ({"page": "two"}, ["query", "page"], "int_parsing"),
            ({"start_date": "yesterday"}, ["query", "start_date"], "datetime_from_date_parsing"),
            ({"end_date": "2026-13-01T00:00:00"}, ["query", "end_date"], None),
            ({"state": "COMPLETED,DONE"}, ["query", "state"], "value_error"),
            ({"state": "completed"}, ["query", "state"], "value_error"),
        ],
    )
    def test_422_is_fastapi_shaped(self, big_api: Api, big_world: World, params, loc, error_type):
        flow = big_world.flows()[0]
        response = big_api.runs_page(flow.org_id, flow.flow_id, **params)
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert error["loc"] == loc
        assert {"type", "loc", "msg", "input"} <= error.keys()
        assert error["input"] == str(next(iter(params.values())))
        if error_type:
            assert error["type"] == error_type

    def test_empty_state_filters_nothing(self, big_api: Api, big_world: World):
        flow = big_world.flows()[0]
        rows = big_api.runs_page(flow.org_id, flow.flow_id, state="").json()
        assert ids(rows) == ids(big_world.runs(flow.org_id, flow.flow_id)[:25])

    def test_org_summary_422(self, big_api: Api):
        response = big_api.get(SUMMARY_PATH, page_size=0)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "page_size"]


class TestAuth:
    def test_missing_key(self, big_api: Api, big_world: World):
        flow = big_world.flows()[0]
        response = big_api.runs_page(flow.org_id, flow.flow_id, api_key="")
        assert response.status_code == 401
        assert response.json() == {"detail": "Not authenticated"}
        assert response.headers["www-authenticate"] == "Bearer"

    def test_wrong_scheme_is_missing(self, big_api: Api, big_world: World):
        flow = big_world.flows()[0]
        response = big_api.session.get(
            f"{big_api.server.url}/analytics/org/{flow.org_id}/flows/{flow.flow_id}",
            headers={"Authorization": f"Basic {big_world.api_key}"},
        )
        assert response.status_code == 401

    def test_invalid_key(self, big_api: Api, big_world: World):
        flow = big_world.flows()[0]
        response = big_api.runs_page(flow.org_id, flow.flow_id, api_key="sk-sim-nope")
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid API key"}
        assert response.headers["www-authenticate"] == "Bearer"

    def test_auth_is_checked_before_validation(self, big_api: Api, big_world: World):
        flow = big_world.flows()[0]
        response = big_api.runs_page(flow.org_id, flow.flow_id, api_key="", page=-1)
        assert response.status_code == 401

    def test_org_key_reads_its_org_only(self, big_api: Api, big_world: World):
        mine, theirs = big_world.flows()[0], big_world.flows()[-1]
        assert mine.org_id != theirs.org_id
        key = big_world.org_api_keys[mine.org_id]
        assert big_api.runs_page(mine.org_id, mine.flow_id, api_key=key).status_code == 200
        response = big_api.runs_page(theirs.org_id, theirs.flow_id, api_key=key)
        assert response.status_code == 403
        assert isinstance(response.json()["detail"], str)

    def test_an_org_the_key_is_not_for_is_403(self, big_api: Api, big_world: World):
        # Whether the world knows the org or not: a real key belongs to one org and cannot
        # tell other orgs apart, so a client's wrong org is a refusal, never a missing flow.
        flow, other = big_world.flows()[0], big_world.flows()[-1]
        key = big_world.org_api_keys[flow.org_id]
        unknown_org = "00000000-0000-4000-8000-000000000000"
        for org_id, flow_id, api_key in [
            (unknown_org, flow.flow_id, None),  # the all-orgs key
            (unknown_org, "00000000-0000-4000-8000-000000000001", None),
            (unknown_org, flow.flow_id, key),
            (other.org_id, other.flow_id, key),  # an org of the world, not the key's
            (other.org_id, flow.flow_id, key),  # ... with a flow of the key's org
        ]:
            response = big_api.runs_page(org_id, flow_id, api_key=api_key)
            assert response.status_code == 403, (org_id, flow_id)
            assert response.json() == {"detail": "Not authorized for this organization"}

    def test_unknown_flow_of_the_keys_org_is_404(self, big_api: Api, big_world: World):
        flow, other = big_world.flows()[0], big_world.flows()[-1]
        key = big_world.org_api_keys[flow.org_id]
        for flow_id, api_key in [
            ("00000000-0000-4000-8000-000000000000", None),
            ("00000000-0000-4000-8000-000000000000", key),
            ("no-such-flow", key),
            (other.flow_id, None),  # a real flow of another org
            (other.flow_id, key),
        ]:
            response = big_api.runs_page(flow.org_id, flow_id, api_key=api_key)
            assert response.status_code == 404, flow_id
            assert response.json() == {"detail": "Flow not found"}


class TestSortOrderOverHttp:
    @pytest.mark.parametrize("order", ["newest_first", "oldest_first", "unordered"])
    def test_pages_follow_the_world_order(self, api: Api, world: World, order: str):
        world.sort_order = order
        flow = world.flows()[0]
        served = [row for page in api.pages(flow.org_id, flow.flow_id, 7) for row in page]
        assert served == world.runs(flow.org_id, flow.flow_id)
        instants = [world.run_instant(run_id) for run_id in ids(served)]
        assert (instants == sorted(instants, reverse=True)) is (order == "newest_first")
        assert (instants == sorted(instants)) is (order == "oldest_first")


class TestLiveChanges:
    def test_before_page_hook_sees_each_page_and_can_insert(self, api: Api, world: World):
        flow = world.flows()[0]
        calls: list[tuple] = []
        inserted: list[str] = []

        def hook(org_id: str, flow_id: str, params: dict) -> None:
            calls.append((org_id, flow_id, params))
            if params.get("page") == "1":
                inserted.append(world.add_run(org_id, flow_id)["run_id"])

        world.before_page = hook
        first = api.runs_page(flow.org_id, flow.flow_id, page=0, page_size=10).json()
        second = api.runs_page(flow.org_id, flow.flow_id, page=1, page_size=10).json()
        assert calls == [
            (flow.org_id, flow.flow_id, {"page": "0", "page_size": "10"}),
            (flow.org_id, flow.flow_id, {"page": "1", "page_size": "10"}),
        ]
        # The new (newest) run shifted everything by one: page 1 repeats page 0's last row.
        assert second[0]["run_id"] == first[-1]["run_id"]
        assert inserted[0] == world.runs(flow.org_id, flow.flow_id)[0]["run_id"]

    def test_hook_not_called_for_rejected_requests(self, api: Api, world: World):
        flow = world.flows()[0]
        calls = []
        world.before_page = lambda *args: calls.append(args)
        api.runs_page(flow.org_id, flow.flow_id, page=-1)
        api.runs_page(flow.org_id, flow.flow_id, api_key="bad")
        assert calls == []

    def test_advance_is_visible_over_http(self, api: Api, world: World):
        flow = world.flows()[0]
        open_run = world.add_run(flow.org_id, flow.flow_id, state="PENDING")
        before = api.runs_page(flow.org_id, flow.flow_id, page_size=1000).json()
        world.advance(3600)
        after = api.runs_page(flow.org_id, flow.flow_id, page_size=1000).json()
        assert len(after) > len(before)
        (completed,) = [row for row in after if row["run_id"] == open_run["run_id"]]
        assert completed["state"] != "PENDING" and completed["date"] == open_run["date"]

    def test_nested_parent_style_over_http(self, api: Api, world: World):
        world.parent_style = "nested"
        rows = [
            row
            for flow in world.flows()
            for page in api.pages(flow.org_id, flow.flow_id, 200)
            for row in page
        ]
        assert not any("parent_run_id" in row for row in rows)
        parents = [row["parent"] for row in rows if row.get("parent")]
        assert parents and all(set(p) == {"run_id", "project_id", "project_name"} for p in parents)


class TestWireFormat:
    def test_values_are_served_verbatim(self, big_api: Api, big_world: World):
        """Dates keep their own format and integral latencies keep int vs float."""
        for flow in big_world.flows():
            response = big_api.runs_page(flow.org_id, flow.flow_id, page_size=1000)
            for row in response.json():
                assert row == big_world.get_run(row["run_id"])
            text = response.content.decode("utf-8")
            assert '"latency":null' in text
        dates = {row["date"] for _, _, row in big_world.all_runs()}
        assert any(d.endswith("Z") for d in dates) and any(d.endswith("+02:00") for d in dates)

    def test_integral_latency_written_as_int_or_float(self, big_api: Api, big_world: World):
        bodies = "".join(
            big_api.runs_page(f.org_id, f.flow_id, page_size=1000).text for f in big_world.flows()
        )
        assert any(f'"latency":{n},' in bodies for n in range(1, 60))
        assert any(f'"latency":{n}.0,' in bodies for n in range(1, 60))

    def test_unicode_is_raw_utf8(self, big_api: Api, big_world: World):
        flow = big_world.flows()[0]
        body = big_api.runs_page(flow.org_id, flow.flow_id, page_size=1000).content
        assert any(b > 0x7F for b in body)
        assert json.loads(body.decode("utf-8"))


class TestRequestLog:
    def test_every_request_is_recorded(self, api: Api, world: World):
        flow = world.flows()[0]
        world.requests.clear()
        api.runs_page(flow.org_id, flow.flow_id, page=2, page_size=5)
        api.runs_page(flow.org_id, flow.flow_id, page=-1)
        api.get(SUMMARY_PATH, api_key="bad")
        path = f"/analytics/org/{flow.org_id}/flows/{flow.flow_id}"
        assert world.requests == [
            {
                "method": "GET",
                "path": path,
                "params": {"page": "2", "page_size": "5"},
                "status": 200,
                "fault": None,
            },
            {"method": "GET", "path": path, "params": {"page": "-1"}, "status": 422, "fault": None},
            {"method": "GET", "path": SUMMARY_PATH, "params": {}, "status": 401, "fault": None},
        ]
        assert world.request_count == 3


class TestInjectedFailures:
    def test_fail_next_then_recover(self, api: Api, world: World):
        flow = world.flows()[0]
        world.fail_next(2, status=429, retry_after=1.5)
        for _ in range(2):
            response = api.runs_page(flow.org_id, flow.flow_id)
            assert response.status_code == 429
            assert response.headers["retry-after"] == "1.5"
            assert response.json() == {"detail": "Too Many Requests"}
        assert api.runs_page(flow.org_id, flow.flow_id).status_code == 200

    def test_failures_are_not_consumed_by_unauthorised_requests(self, api: Api, world: World):
        flow = world.flows()[0]
        world.fail_next(status=503)
        assert api.runs_page(flow.org_id, flow.flow_id, api_key="bad").status_code == 401
        response = api.runs_page(flow.org_id, flow.flow_id)
        assert response.status_code == 503 and "retry-after" not in response.headers


class TestOrgSummary:
    def test_all_orgs_key_lists_every_project(self, big_api: Api, big_world: World):
        rows = big_api.get(SUMMARY_PATH, page_size=100).json()
        assert [row["project_id"] for row in rows] == [f.flow_id for f in big_world.flows()]
        assert [row["project_name"] for row in rows] == [f.name for f in big_world.flows()]

    def test_org_key_lists_its_projects(self, big_api: Api, big_world: World):
        org_id = big_world.org_ids()[1]
        rows = big_api.get(SUMMARY_PATH, api_key=big_world.org_api_keys[org_id]).json()
        assert {row["project_id"] for row in rows} == {
            f.flow_id for f in big_world.flows() if f.org_id == org_id
        }

    def test_figures_match_the_runs_in_the_window(self, big_api: Api, big_world: World):
        start, end = ANCHOR - timedelta(days=3), ANCHOR - timedelta(days=1)
        rows = big_api.get(SUMMARY_PATH, start_date=iso(start), end_date=iso(end)).json()
        for row, flow in zip(rows, big_world.flows(), strict=True):
            runs = [
                r
                for r in big_world.runs(flow.org_id, flow.flow_id)
                if start <= big_world.run_instant(r["run_id"]) <= end
            ]
            assert row["total_runs"] == len(runs) > 0
            assert row["total_errors"] == sum(r["state"] == "FAILED" for r in runs)
            assert row["total_tokens"] == sum(r["total_tokens"] for r in runs)
            assert row["total_users"] == len({r["user_id"] for r in runs} - {None})
            assert row["is_published"] == (row["public_ui_url"] is not None)

    def test_paged(self, big_api: Api, big_world: World):
        pages = [big_api.get(SUMMARY_PATH, page=p, page_size=4).json() for p in range(3)]
        assert [len(page) for page in pages] == [4, 2, 0]
