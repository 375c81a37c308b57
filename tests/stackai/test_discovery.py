"""The org summary's rows: which ids are usable, and the `flows` rows and state kept from them
(pure functions; the HTTP side is in tests/test_discovery.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipelines.stackai.discovery import Discovery, flow_rows, read_projects
from pipelines.stackai.flows import FlowRef

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)


class SummaryPages:
    def __init__(self, *pages: list) -> None:
        self.pages = pages

    def iter_projects(self):
        yield from self.pages


def project(project_id: str, name: str, total_runs: int = 3) -> dict:
    return {
        "project_id": project_id,
        "project_name": name,
        "project_type": "workflow",
        "project_owner": {"user_id": "u", "email": "o@example.com", "avatar_url": "https://x"},
        "total_runs": total_runs,
        "total_errors": 1,
        "total_tokens": 10,
        "total_users": 2,
        "is_published": False,
        "public_ui_url": None,
    }


def test_ids_the_summary_gives_are_checked_like_configured_ones():
    client = SummaryPages(
        [project("f-1", "One"), {"project_id": "bad id"}, {"project_id": 7}, "not a row"],
        [{"project_name": "no id"}, project("..", "dots"), project("f-1", "again")],
        [project("f-2", "Two")],
    )
    projects = read_projects(client)  # type: ignore[arg-type]
    assert list(projects) == ["f-1", "f-2"]
    assert projects["f-1"]["project_name"] == "One"  # first occurrence kept
    assert FlowRef("org", "f-1").path.endswith("/f-1")


def discovery(at: datetime, *projects: dict) -> Discovery:
    return Discovery(projects={p["project_id"]: p for p in projects}, read_at=at)


def test_flows_rows_remember_first_seen_mark_new_and_unlisted_flows():
    a, b = FlowRef("org", "a"), FlowRef("org", "b")
    rows, state, new, unlisted = flow_rows(
        [a, b], discovery(T0, project("a", "A"), project("b", "B")), {}, T0, None
    )
    assert sorted(new) == ["org/a", "org/b"] and unlisted == []
    assert {r["flow_name"] for r in rows} == {"A", "B"}
    assert all(r["is_listed"] and r["first_seen_at"] == T0 for r in rows)

    later = T0 + timedelta(days=1)
    rows, state, new, unlisted = flow_rows(
        [a], discovery(later, project("a", "A renamed", 9)), state, later, T0
    )
    assert new == [] and unlisted == ["org/b"]
    by_flow = {r["flow_id"]: r for r in rows}
    assert by_flow["a"]["flow_name"] == "A renamed" and by_flow["a"]["total_runs"] == 9
    assert by_flow["a"]["first_seen_at"] == T0 and by_flow["a"]["last_seen_at"] == later
    # b keeps its name and last sighting, marked as no longer listed
    assert by_flow["b"]["flow_name"] == "B" and by_flow["b"]["is_listed"] is False
    assert by_flow["b"]["last_seen_at"] == T0
    assert all(r["initial_start_date"] == T0 for r in rows)

    # reported as no longer listed once, not at every sync after
    _, _, _, unlisted = flow_rows([a], discovery(later, project("a", "A")), state, later, None)
    assert unlisted == []


def test_without_a_summary_flows_keep_what_was_known():
    a = FlowRef("org", "a")
    _, state, _, _ = flow_rows([a], discovery(T0, project("a", "A")), {}, T0, None)
    rows, _, new, unlisted = flow_rows([a], Discovery(), state, T0 + timedelta(hours=1), None)
    assert new == [] and unlisted == []
    (row,) = rows
    assert row["flow_name"] == "A" and row["is_listed"] is True  # last known status kept
