"""`stackai-runs`, the command line (`app.py`), and what it prints (`console.py`)."""

from pipelines.cli.app import app, main

__all__ = ["app", "main"]
