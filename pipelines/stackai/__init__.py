"""The `stackai` dlt source: StackAI flow runs, incrementally, for any dlt pipeline.

import dlt
from pipelines.stackai import stackai

pipeline = dlt.pipeline("stackai_runs", destination="duckdb", dataset_name="stackai")
pipeline.run(stackai(flows=["ORG_ID/FLOW_ID"]))
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.stackai.config import ConfigError, StackAIConfiguration
    from pipelines.stackai.flows import FlowRef
    from pipelines.stackai.source import stackai

_EXPORTS = {
    "ConfigError": "pipelines.stackai.config",
    "FlowRef": "pipelines.stackai.flows",
    "StackAIConfiguration": "pipelines.stackai.config",
    "stackai": "pipelines.stackai.source",
}
"""Where each public name lives. Imported on first use: the package is also the parent of light
modules (`progress`, `limit`) that `stackai-runs --help` loads, and the source imports dlt."""


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = ["ConfigError", "FlowRef", "StackAIConfiguration", "stackai"]
