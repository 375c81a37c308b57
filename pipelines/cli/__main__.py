"""`python -m pipelines.cli`: the same as the `stackai-runs` command."""

from pipelines.cli import main

main()
