"""Ctrl-C (SIGINT) and SIGTERM (cron's `timeout`, a container stop) at any moment of a command.

While flows are reading, the first signal stops them softly: each stops before its next request
and fails with its cursor unmoved, and what was read is loaded and committed as usual, so the
sync ends in seconds with nothing half-done. At any other moment (start-up, normalising, loading)
it raises `Interrupted` in the main thread, as Python's own Ctrl-C raises KeyboardInterrupt:
dlt's load stops, its package stays pending, and the next sync loads it first. A second signal
ends the process at once, which is as safe as `kill -9` (tests/test_crash.py): state only moves
with loaded data.

Exit codes: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A signal asked the command to stop; `exit_code` is 128 + its number.

    A BaseException like KeyboardInterrupt, but not one: click turns a KeyboardInterrupt into
    "Aborted!" and exit 1, and no `except Exception` may swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


received: int | None = None
"""The first signal received, or None."""
_report: Any = None


def _signum(exc: BaseException) -> int:
    if isinstance(exc, Interrupted):
        return exc.signum
    # dlt's own handler, active while it normalises and loads, raises this after draining its
    # job pool (dlt.common.exceptions.SignalReceivedException)
    return int(getattr(exc, "signal_code", 0) or signal.SIGINT)


def exit_code(exc: BaseException) -> int:
    """128 + the signal's number (130 for a plain KeyboardInterrupt)."""
    return 128 + _signum(exc)


def describe(exc: BaseException | int) -> str:
    """The signal's name: SIGINT, SIGTERM."""
    signum = exc if isinstance(exc, int) else _signum(exc)
    return signal.Signals(signum).name


def watch(report: Any) -> None:
    """While `report.reading`, a signal stops the flows softly (`report.stop`) instead of raising;
    None: raise at once again. Also notes the signals dlt's own handler takes while it
    normalises and loads (it stops its job pool gracefully), so none goes unanswered."""
    global _report
    _report = report
    if report is not None:
        _note_dlt_signals()


def _note_dlt_signals() -> None:
    from dlt.common.runtime import signals as dlt_signals

    original = dlt_signals.set_received_signal
    if getattr(original, "_noted", False):
        return

    def noted(sig: int) -> None:
        global received
        if received is None:
            received = sig
        original(sig)

    noted._noted = True  # type: ignore[attr-defined]
    dlt_signals.set_received_signal = noted


def _handle(signum: int, frame: FrameType | None) -> None:
    global received
    if received is not None:
        # the second signal: the user wants out now; safe, like kill -9
        os.write(2, f"\n{signal.Signals(signum).name} again: stopping at once\n".encode())
        os._exit(128 + signum)
    received = signum
    report = _report
    if report is not None and report.reading:
        report.stop.set()
        os.write(
            2,
            (
                f"\n{signal.Signals(signum).name}: stopping the flows before their next request;"
                " what was read is loaded, their cursors stay (again to stop at once)\n"
            ).encode(),
        )
        return
    raise Interrupted(signum)


def uninstall() -> None:
    """Python's own handling again (a long-running server that stops on Ctrl-C by design)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def install() -> None:
    """Handle SIGINT and SIGTERM as above (the main thread only, as Python requires)."""
    for signum in HANDLED:
        signal.signal(signum, _handle)


__all__ = ["Interrupted", "describe", "exit_code", "install", "received", "uninstall", "watch"]
