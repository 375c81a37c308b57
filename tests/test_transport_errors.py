"""Connection-level failures end a flow with one short line naming the host and the cause."""

from __future__ import annotations

from pipelines.load import run_sync


def test_a_response_cut_short_every_time_is_one_line(settings, world):
    broken = settings.flows[0]
    world.inject("truncated", count=settings.http.max_attempts, flow_id=broken.flow_id)
    report = run_sync(settings, now=world.now)
    assert [f.flow for f in report.failed] == [str(broken)]
    error = report.flows[str(broken)].error
    host = settings.base_url.removeprefix("http://")
    assert error.startswith(f"{host} cut a response short (IncompleteRead("), error
    assert "\n" not in error and "Connection broken" not in error and len(error) < 120
