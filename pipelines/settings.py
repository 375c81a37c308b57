"""The CLI's configuration: the source's keys plus the sync's own, flags over them, checked once.

Keys live in `[sources.stackai]` (`stackai.config.StackAIConfiguration` and the sync's keys
below); the DuckDB file is dlt's own `[destination.duckdb] credentials`. Where values come from,
highest first: command-line flags; environment variables (`SOURCES__STACKAI__<KEY>`, and
`STACKAI_API_KEY` for the key); `.dlt/secrets.toml`; `.dlt/config.toml`.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
from dlt.common.configuration import configspec, resolve_configuration
from dlt.common.configuration.container import Container
from dlt.common.configuration.exceptions import (
    ConfigurationException,
    ConfigValueCannotBeCoercedException,
)
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

from pipelines.load.destination import DestinationChoice, choose
from pipelines.pricing import ModelPriceOverride, parse_overrides
from pipelines.stackai import endpoint
from pipelines.stackai.config import (
    API_KEY_DLT_ENV,
    API_KEY_ENV,
    EXAMPLE_PLACEHOLDER_KEY,
    ConfigError,
    StackAIConfiguration,
    check_base_url,
    parse_duration,
    parse_instant,
    register_key_environment,
    settings_dir,
)
from pipelines.stackai.flows import FlowRef
from pipelines.stackai.http import HttpSettings
from pipelines.stackai.window import WindowRules

__all__ = [
    "API_KEY_DLT_ENV",
    "API_KEY_ENV",
    "DEFAULT_DUCKDB_PATH",
    "DEFAULT_MEMORY_LIMIT",
    "EXAMPLE_PLACEHOLDER_KEY",
    "ConfigError",
    "SyncConfiguration",
    "SyncSettings",
    "check_base_url",
    "load_settings",
    "parse_duration",
    "parse_instant",
    "settings_dir",
]

log = logging.getLogger(__name__)

DEFAULT_DUCKDB_PATH = "stackai_runs.duckdb"
"""dlt's own default for a pipeline named `stackai_runs` (`<pipeline_name>.duckdb`)."""
DEFAULT_MEMORY_LIMIT = "512MB"
"""DuckDB's memory limit while loading, unless configured (benchmarks/README.md: why)."""


def _valid_memory_limit(limit: str) -> bool:
    # DuckDB itself says what it accepts (512MB, 1.5GB, 2GiB ...): an in-memory database is free.
    try:
        duckdb.connect(config={"memory_limit": limit}).close()
    except duckdb.Error:
        return False
    return True


@configspec
class SyncConfiguration(StackAIConfiguration):
    """`[sources.stackai]` as `stackai-runs sync` reads it: the source's keys and the sync's."""

    max_concurrent_flows: int = 8
    duckdb_memory_limit: str | None = DEFAULT_MEMORY_LIMIT
    lock_timeout: float = 0.0
    sql_dir: str | None = None
    """A folder of the user's own view files, applied after the shipped ones."""
    destination: str | None = None
    """dlt destination name (`pipelines.load.destination.DESTINATIONS`); None = duckdb."""
    model_prices: dict[str, Any] | None = None
    """Price overrides, `{"PROVIDER/MODEL_ID": {"input_per_mtok", "output_per_mtok", "from"}}`
    (`pipelines.pricing.parse_overrides`)."""

    def on_resolved(self) -> None:
        super().on_resolved()
        if self.max_concurrent_flows < 1:
            raise ConfigError(
                "sources.stackai.max_concurrent_flows must be at least 1, got"
                f" {self.max_concurrent_flows}"
            )
        if self.lock_timeout < 0:
            raise ConfigError(
                f"sources.stackai.lock_timeout must not be negative, got {self.lock_timeout}"
            )
        parse_overrides(self.model_prices, "sources.stackai.model_prices")
        limit = self.duckdb_memory_limit
        if limit and not _valid_memory_limit(limit):
            raise ConfigError(
                "sources.stackai.duckdb_memory_limit must be a size such as 512MB or 2GB,"
                f" got {limit!r}"
            )


@dataclass(frozen=True)
class SyncSettings:
    """Everything one sync needs, validated.

    Attributes:
        base_url: API root without trailing slash.
        api_key: Bearer key (a secret: never print this object's repr in logs; repr hides it).
        flows: Distinct flows configured by hand, in configuration order.
        orgs: Orgs whose every flow the org summary lists is synced too.
        duckdb_path: The DuckDB file; dlt's working directory sits beside it.
        page_size: Runs per request.
        rules: Window rules: initial start, lookback, open-run re-checks, feedback pass.
        max_concurrent_flows: Flows fetched at once.
        since / until: Backfill window for this run only (aware UTC) or None.
        full_refresh: Drop what is stored for the selected flows (rows and state) and reload.
        http: Timeouts, retries and the request limit.
        lock_timeout: Seconds to wait for another sync of the same DuckDB file to finish.
        duckdb_memory_limit: DuckDB's memory limit while loading ("512MB"), or None.
        allow_insecure_http: `base_url` may be plain http to a non-loopback host.
        sql_dir: A folder of the user's own view files, applied after the shipped ones.
        destination: Where to load (`pipelines.load.destination.choose`); None = the DuckDB
            file `duckdb_path`.
        model_prices: The user's LLM prices, winning over genai-prices' (`pipelines.pricing`).
        time_slices: Read a flow's window of more than a page as concurrent time slices.
    """

    base_url: str
    api_key: str = field(repr=False)
    flows: tuple[FlowRef, ...]
    duckdb_path: Path
    orgs: tuple[str, ...] = ()
    page_size: int = endpoint.DEFAULT_PAGE_SIZE
    rules: WindowRules = field(default_factory=WindowRules)
    max_concurrent_flows: int = 8
    since: datetime | None = None
    until: datetime | None = None
    full_refresh: bool = False
    http: HttpSettings = field(default_factory=HttpSettings)
    lock_timeout: float = 0.0
    duckdb_memory_limit: str | None = DEFAULT_MEMORY_LIMIT
    allow_insecure_http: bool = False
    sql_dir: Path | None = None
    destination: DestinationChoice | None = None
    model_prices: tuple[ModelPriceOverride, ...] = ()
    time_slices: bool = True

    def target(self) -> DestinationChoice:
        """Where this sync loads: `destination`, or the DuckDB file `duckdb_path`."""
        if self.destination is not None:
            return self.destination
        return choose("duckdb", self.duckdb_path, self.duckdb_memory_limit)


def unknown_keys() -> list[str]:
    """`[sources.stackai]` keys no setting reads (in dlt's TOML files or its environment
    variables), each with where it is set and the closest known key: a typo otherwise goes
    unnoticed (`pagesize = 5` would leave page_size at its default)."""
    known = set(SyncConfiguration.get_resolvable_fields())
    found: dict[str, str] = {}
    for provider in Container()[PluggableRunContext].providers.providers:
        doc = getattr(provider, "_config_doc", None)
        section = doc.get("sources", {}).get("stackai", {}) if isinstance(doc, dict) else {}
        for key in section if isinstance(section, dict) else ():
            found.setdefault(key, f"[sources.stackai] of {provider.name}")
    prefix = "SOURCES__STACKAI__"
    for name in os.environ:
        if name.startswith(prefix) and "__" not in name[len(prefix) :]:
            found.setdefault(name[len(prefix) :].lower(), f"the environment ({name})")
    notes = []
    for key, where in sorted(found.items()):
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        notes.append(f"unknown key {key!r} in {where} is ignored{hint}")
    return notes


def load_settings(
    *,
    flows: list[str] | None = None,
    orgs: list[str] | None = None,
    base_url: str | None = None,
    duckdb_path: str | None = None,
    page_size: int | None = None,
    since: str | None = None,
    until: str | None = None,
    api_key: str | None = None,
    full_refresh: bool = False,
    allow_insecure_http: bool = False,
    sql_dir: str | None = None,
    destination: str | None = None,
) -> SyncSettings:
    """Resolve the configuration and apply command-line overrides (None = not given).

    Returns:
        Validated `SyncSettings`.

    Raises:
        ConfigError: a missing API key, no flow, or any invalid value, as one line naming the
            key or flag. The message never contains the API key.
    """
    flags = {
        "flows": flows or None,
        # `--flow` alone syncs only those flows: the configured orgs are not discovered then
        "orgs": orgs or ([] if flows else None),
        "base_url": base_url,
        "page_size": page_size,
        "api_key": api_key,
        "allow_insecure_http": allow_insecure_http or None,
        "sql_dir": sql_dir,
        "destination": destination,
    }
    register_key_environment()
    try:
        config = resolve_configuration(
            SyncConfiguration(),
            sections=("sources", "stackai"),
            explicit_value={k: v for k, v in flags.items() if v is not None},
        )
    except ConfigurationException as exc:
        if "model_prices" in str(exc):
            raise ConfigError(
                "sources.stackai.model_prices: not a table of prices; in the environment,"
                " SOURCES__STACKAI__MODEL_PRICES holds a JSON object such as"
                ' {"OpenAI/gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10}}'
            ) from None
        if isinstance(exc, ConfigValueCannotBeCoercedException):
            raise ConfigError(wrong_type(exc.field_name, exc.field_value, exc.hint)) from None
        raise ConfigError(f"configuration: {str(exc).splitlines()[0]}") from None
    if config.sql_dir and not Path(config.sql_dir).expanduser().is_dir():
        raise ConfigError(
            f"sql_dir / --sql-dir: no folder at {config.sql_dir} (your own view files go there)"
        )
    for note in unknown_keys():
        log.warning("%s", note)
    for flag, value in (("--since", since), ("--until", until)):
        if value is not None and not value.strip():
            raise ConfigError(f"{flag} is empty (an unset variable in a crontab?)")
    if duckdb_path is not None and not duckdb_path.strip():
        raise ConfigError("--duckdb is empty (an unset variable in a crontab?)")
    if destination is not None and not destination.strip():
        raise ConfigError("--destination is empty (an unset variable in a crontab?)")
    path = duckdb_path or dlt.config.get("destination.duckdb.credentials", str)
    memory_limit = config.duckdb_memory_limit or None
    target = choose(config.destination, Path(path or DEFAULT_DUCKDB_PATH), memory_limit)
    if duckdb_path is not None and not target.is_duckdb_file:
        raise ConfigError(
            f"--duckdb is for the duckdb destination, and this sync loads into"
            f" {target.describe()} (--destination, or destination in [sources.stackai]);"
            " drop one of them"
        )
    settings = SyncSettings(
        base_url=config.base_url,
        api_key=config.api_key,
        flows=config.flow_refs("--flow" if flows else "sources.stackai.flows"),
        orgs=config.org_ids(),
        duckdb_path=Path(path or DEFAULT_DUCKDB_PATH),
        page_size=config.page_size,
        rules=config.window_rules(),
        max_concurrent_flows=config.max_concurrent_flows,
        since=parse_instant(since, "--since") if since is not None else None,
        until=parse_instant(until, "--until") if until is not None else None,
        full_refresh=full_refresh,
        http=config.http_settings(),
        lock_timeout=float(config.lock_timeout),
        duckdb_memory_limit=memory_limit,
        allow_insecure_http=config.allow_insecure_http,
        sql_dir=Path(config.sql_dir).expanduser() if config.sql_dir else None,
        destination=target,
        model_prices=tuple(parse_overrides(config.model_prices, "sources.stackai.model_prices")),
        time_slices=bool(config.time_slices),
    )
    if settings.since and settings.until and settings.since > settings.until:
        raise ConfigError(f"--since ({since}) is after --until ({until})")
    return settings


_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def wrong_type(name: str, value: Any, hint: Any) -> str:
    """The error for a `[sources.stackai]` value dlt could not coerce to its key's type.

    Args:
        name: The key (`time_slices`).
        value: What was set (shown unless the key holds a secret).
        hint: The key's type (`bool`, `int`, ...).

    Returns:
        One line naming the key, where it is read from, and what it takes.
    """
    wanted = _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))
    secret = any(word in name for word in ("key", "password", "credentials", "secret"))
    shown = "a value" if secret else repr(value)
    return (
        f"sources.stackai.{name}: {shown} is not {wanted} (set in [sources.stackai] of"
        f" .dlt/config.toml, read from {settings_dir()}, or SOURCES__STACKAI__{name.upper()})"
    )
