"""The analysis views users query, one `NNN_<view>.sql` file each (README, "Analysis views").

This folder ships inside the package as `pipelines.sql` (pyproject.toml), so an installed
`stackai-runs` finds its views with no clone present.
"""
