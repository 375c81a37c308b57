"""`stackai-runs`, the command line (`app.py`), what it prints (`console.py`), and how it
stops on a signal (`signals.py`)."""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    """Console-script entry point (`stackai-runs`): signals are handled before anything heavy is
    imported, so Ctrl-C during start-up is one line too, never a traceback. The app imports
    only typer and rich; each command imports dlt and the rest itself (tests/test_startup.py),
    and a signal while it does is still this one line."""
    from pipelines.cli import signals

    signals.install()
    try:
        from pipelines.cli.app import main as run

        run()
    except (KeyboardInterrupt, signals.Interrupted) as exc:  # outside a sync: start-up, views
        sys.stderr.write(f"interrupted ({signals.describe(exc)}): nothing was changed\n")
        sys.exit(signals.exit_code(exc))


def __getattr__(name: str) -> Any:
    if name == "app":  # the typer app, imported on demand: `main` installs the signals first
        from pipelines.cli.app import app

        return app
    raise AttributeError(name)


__all__ = ["app", "main"]
