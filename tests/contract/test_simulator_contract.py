"""The simulator against the vendor contract: real responses validated with JSON Schema, and the
app's generated OpenAPI operations compared with the contract's.

The contract is vendored beside this file (CI may not have the shared folder); a test checks the
copy against the shared original whenever that is present.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator, FormatChecker

from pipelines.simulator import SimulatorServer, World, create_app

CONTRACT_PATH = Path(__file__).with_name("analytics-openapi.yml")
SHARED_CONTRACT_PATH = Path(__file__).parents[2].parent / "shared/stackai/analytics-openapi.yml"
FLOWS_PATH = "/analytics/org/{org_id}/flows/{flow_id}"
SUMMARY_PATH = "/organizations/analytics/projects-run-summary"
ANCHOR = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

FORMATS = FormatChecker()  # uuid and the other formats jsonschema checks out of the box


@FORMATS.checks("date-time", raises=ValueError)
def _is_rfc3339_date_time(value: object) -> bool:
    # jsonschema checks "date-time" only with an optional package; this is RFC 3339 section 5.6:
    # an offset is mandatory, so a naive ISO-8601 string is not a date-time.
    if not isinstance(value, str):
        return True
    return bool(RFC3339.fullmatch(value)) and datetime.fromisoformat(value) is not None


@FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parsed = urlparse(value)
    return bool(parsed.scheme and parsed.netloc)


@pytest.fixture(scope="module")
def contract() -> dict:
    return yaml.safe_load(CONTRACT_PATH.read_text(encoding="utf-8"))


def response_validator(contract: dict, path: str, status: str) -> Draft202012Validator:
    """Validator for one response body of an operation, `$ref`s resolved in the contract.

    `ProjectRunSummary.date` is checked without its format: the API may send naive date-times
    (API-NOTES.md), which are not RFC 3339; `test_dates_are_iso_8601` checks them instead.
    """
    components = copy.deepcopy(contract["components"])
    del components["schemas"]["ProjectRunSummary"]["properties"]["date"]["format"]
    body = contract["paths"][path]["get"]["responses"][status]["content"]["application/json"]
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **copy.deepcopy(body["schema"]),
        "components": components,
    }
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(World(seed=1, anchor=ANCHOR, runs_per_flow=150)) as running:
        yield running


def get(server: SimulatorServer, path: str, api_key: str | None = None, **params):
    key = server.world.api_key if api_key is None else api_key
    return requests.get(
        server.url + path, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


@pytest.fixture(scope="module")
def flow_pages(server: SimulatorServer) -> list[list]:
    """Every page (size 100) of every flow, as returned over HTTP."""
    pages = []
    for flow in server.world.flows():
        page = 0
        while True:
            response = get(
                server,
                f"/analytics/org/{flow.org_id}/flows/{flow.flow_id}",
                page=page,
                page_size=100,
            )
            assert response.status_code == 200
            pages.append(response.json())
            if not pages[-1]:
                break
            page += 1
    return pages


def test_vendored_contract_matches_the_shared_one():
    if not SHARED_CONTRACT_PATH.exists():
        pytest.skip(f"{SHARED_CONTRACT_PATH} is not present (e.g. in CI)")
    assert CONTRACT_PATH.read_bytes() == SHARED_CONTRACT_PATH.read_bytes()


class TestResponsesValidate:
    def test_every_flow_runs_page(self, contract: dict, flow_pages: list[list]):
        validator = response_validator(contract, FLOWS_PATH, "200")
        for page in flow_pages:
            errors = [e.message for e in validator.iter_errors(page)]
            assert not errors, errors[:5]
        assert sum(len(page) for page in flow_pages) > 700

    def test_rows_use_only_contract_keys(self, contract: dict, flow_pages: list[list]):
        schemas = contract["components"]["schemas"]
        run_keys = set(schemas["ProjectRunSummary"]["properties"])
        usage_keys = set(schemas["LLMUsageData"]["properties"])
        for row in (row for page in flow_pages for row in page):
            assert set(row) <= run_keys
            for usage in row.get("llm_usage", []):
                assert set(usage) <= usage_keys

    def test_dates_are_iso_8601(self, server: SimulatorServer, flow_pages: list[list]):
        rfc3339 = naive = 0
        for row in (row for page in flow_pages for row in page):
            parsed = datetime.fromisoformat(row["date"])
            if parsed.tzinfo is None:
                naive += 1
                parsed = parsed.replace(tzinfo=UTC)
            else:
                rfc3339 += 1
                assert _is_rfc3339_date_time(row["date"])
            assert parsed == server.world.run_instant(row["run_id"])
        assert naive and rfc3339, "both kinds occur, which is why `date` skips the format check"

    def test_422_bodies(self, contract: dict, server: SimulatorServer):
        flow = server.world.flows()[0]
        flows_path = f"/analytics/org/{flow.org_id}/flows/{flow.flow_id}"
        bad = [
            (FLOWS_PATH, flows_path, {"page": -1}),
            (FLOWS_PATH, flows_path, {"page_size": 0}),
            (FLOWS_PATH, flows_path, {"start_date": "last tuesday"}),
            (FLOWS_PATH, flows_path, {"state": "FINISHED"}),
            (SUMMARY_PATH, SUMMARY_PATH, {"page": -3}),
            (SUMMARY_PATH, SUMMARY_PATH, {"end_date": "2026-02-30T00:00:00"}),
        ]
        for contract_path, path, params in bad:
            response = get(server, path, **params)
            assert response.status_code == 422, params
            validator = response_validator(contract, contract_path, "422")
            errors = [e.message for e in validator.iter_errors(response.json())]
            assert not errors, (params, errors)
            assert response.json()["detail"], "the contract allows an empty list; we never send one"

    def test_org_summary_rows(self, contract: dict, server: SimulatorServer):
        validator = response_validator(contract, SUMMARY_PATH, "200")
        keys = [server.world.api_key, *server.world.org_api_keys.values()]
        for key in keys:
            rows = get(server, SUMMARY_PATH, api_key=key, start_date="2026-11-20T00:00:00Z").json()
            assert rows
            errors = [e.message for e in validator.iter_errors(rows)]
            assert not errors, errors[:5]

    def test_org_of_many_changing_flows(self, contract: dict):
        """One org of 32 flows (two summary pages), plus flows added by hand and by the clock,
        one removed and one deleted while still listed: every summary page and every runs page
        of an added flow is valid."""
        summary = response_validator(contract, SUMMARY_PATH, "200")
        flows = response_validator(contract, FLOWS_PATH, "200")
        world = World(seed=2, anchor=ANCHOR, orgs=1, flows_per_org=32, runs_per_flow=5)
        org_id = world.org_ids()[0]
        added = [world.add_flow(org_id), world.add_flow(org_id, published=True)]
        world.advance(6 * 3600, new_flows_per_hour=0.5)
        world.add_flow(org_id, "No runs yet", project_type="agent", published=False)
        world.remove_flow(world.flows()[0].flow_id)
        world.remove_flow(world.flows()[1].flow_id, from_summary=False)
        with SimulatorServer(world) as running:
            rows = []
            for key in (world.api_key, world.org_api_keys[org_id]):
                page = 0
                while page == 0 or len(rows[-1]) == 25:
                    rows.append(get(running, SUMMARY_PATH, api_key=key, page=page).json())
                    errors = [e.message for e in summary.iter_errors(rows[-1])]
                    assert not errors, errors[:5]
                    page += 1
            assert sum(map(len, rows)) == 2 * len(world.listed_flows()) > 2 * 34
            good = rows[0][0]
            owner = {k: v for k, v in good["project_owner"].items() if k != "avatar_url"}
            for bad in ({"total_runs": "3"}, {"is_published": None}, {"project_owner": owner}):
                assert not summary.is_valid([{**good, **bad}]), bad
            for flow in world.flows()[31:]:
                page = get(running, f"/analytics/org/{org_id}/flows/{flow.flow_id}").json()
                errors = [e.message for e in flows.iter_errors(page)]
                assert not errors, errors[:5]
        assert all(world.run_count(org_id, flow.flow_id) for flow in added)

    def test_validator_is_not_vacuous(self, contract: dict, flow_pages: list[list]):
        validator = response_validator(contract, FLOWS_PATH, "200")
        good = next(row for page in flow_pages for row in page if row.get("llm_usage"))
        corruptions = [
            {"run_id": "not-a-uuid"},
            {"state": "DONE"},
            {"total_tokens": 1.5},
            {"latency": "2s"},
            {"run_type": "cli"},
            {"ran_by_id": "user-1"},
            {"llm_usage": [{**good["llm_usage"][0], "tokens": -1}]},
            {"llm_usage": [{**good["llm_usage"][0], "connection_id": "conn-1"}]},
            {"llm_usage": [{**good["llm_usage"][0], "provider": "OpenAi"}]},
        ]
        for change in corruptions:
            assert not validator.is_valid([{**good, **change}]), change
        missing = {k: v for k, v in good.items() if k != "feedback"}
        assert not validator.is_valid([missing])
        assert _is_rfc3339_date_time("2026-11-29T10:15:30Z")
        assert not _is_rfc3339_date_time("2026-11-29T10:15:30.123456")


@pytest.fixture(scope="module")
def generated() -> dict:
    """The simulator app's own OpenAPI document."""
    return create_app(World(anchor=ANCHOR, runs_per_flow=1)).openapi()


class TestGeneratedOpenApi:
    @pytest.mark.parametrize("path", [FLOWS_PATH, SUMMARY_PATH])
    def test_operation_matches(self, contract: dict, generated: dict, path: str):
        ours, theirs = generated["paths"][path]["get"], contract["paths"][path]["get"]
        assert ours["operationId"] == theirs["operationId"]
        assert ours["summary"] == theirs["summary"]
        assert [(p["name"], p["in"]) for p in ours["parameters"]] == [
            (p["name"], p["in"]) for p in theirs["parameters"]
        ]
        for mine, vendor in zip(ours["parameters"], theirs["parameters"], strict=True):
            assert mine["required"] == vendor["required"], mine["name"]
            assert mine["schema"].get("minimum") == vendor["schema"].get("minimum"), mine["name"]
            assert mine["schema"].get("default") == vendor["schema"].get("default"), mine["name"]
            assert mine == vendor, mine["name"]  # and everything else, verbatim
        for status in ("200", "422"):
            assert ours["responses"][status]["content"]["application/json"]["schema"].get(
                "items"
            ) == theirs["responses"][status]["content"]["application/json"]["schema"].get("items")

    # Not ValidationError: FastAPI generates it, and newer FastAPI lists `input` and `ctx` too.
    @pytest.mark.parametrize("name", ["ProjectRunSummary", "LLMUsageData", "OrgProjectRunSummary"])
    def test_schema_keys_match(self, contract: dict, generated: dict, name: str):
        ours = generated["components"]["schemas"][name]
        theirs = contract["components"]["schemas"][name]
        assert list(ours["properties"]) == list(theirs["properties"])
        assert sorted(ours["required"]) == sorted(theirs["required"])

    @pytest.mark.parametrize(
        "name", ["WorkflowState", "RunType", "RanByType", "LLMProviderEnum", "LLMConnectionOrigin"]
    )
    def test_enums_match(self, contract: dict, generated: dict, name: str):
        assert (
            generated["components"]["schemas"][name]["enum"]
            == (contract["components"]["schemas"][name]["enum"])
        )
