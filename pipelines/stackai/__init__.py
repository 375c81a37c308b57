"""The `stackai` dlt source: StackAI flow runs, incrementally, for any dlt pipeline.

import dlt
from pipelines.stackai import stackai

pipeline = dlt.pipeline("stackai_runs", destination="duckdb", dataset_name="stackai")
pipeline.run(stackai(flows=["ORG_ID/FLOW_ID"]))
"""

from pipelines.stackai.config import ConfigError, StackAIConfiguration
from pipelines.stackai.flows import FlowRef
from pipelines.stackai.source import stackai

__all__ = ["ConfigError", "FlowRef", "StackAIConfiguration", "stackai"]
