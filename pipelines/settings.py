"""The sync's configuration: dlt's providers first, command-line flags over them, checked once.

Where values come from, highest first: command-line flags; environment variables
(`SOURCES__STACKAI__<KEY>`, and `STACKAI_API_KEY` for the key); `.dlt/secrets.toml`;
`.dlt/config.toml` (committed, every key documented there). Keys live in `[sources.stackai]`;
the DuckDB file is dlt's own `[destination.duckdb] credentials`.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dlt
import duckdb
import pendulum
from dlt.common.configuration import configspec, resolve_configuration
from dlt.common.configuration.exceptions import ConfigurationException
from dlt.common.configuration.specs import BaseConfiguration, RuntimeConfiguration
from dlt.common.typing import TSecretStrValue

from pipelines.stackai import endpoint
from pipelines.stackai.dates import parse_api_datetime
from pipelines.stackai.flows import FlowRef, parse_flows
from pipelines.stackai.http import HttpSettings
from pipelines.stackai.window import WindowRules

DEFAULT_DUCKDB_PATH = "stackai_runs.duckdb"
API_KEY_ENV = "STACKAI_API_KEY"
API_KEY_DLT_ENV = "SOURCES__STACKAI__API_KEY"
EXAMPLE_PLACEHOLDER_KEY = "your StackAI API key"
"""The value `.dlt/secrets.toml.example` ships with."""


def settings_dir() -> Path:
    """The `.dlt` folder dlt reads: in the current directory, or under `DLT_PROJECT_DIR`."""
    return Path(os.environ.get("DLT_PROJECT_DIR") or os.getcwd()) / ".dlt"


class ConfigError(ValueError):
    """The configuration cannot work. The message is one line naming the key or flag."""


DEFAULT_MEMORY_LIMIT = "512MB"

"""DuckDB's memory limit while loading, unless configured (benchmarks/README.md: why)."""


@configspec
class StackAIConfiguration(BaseConfiguration):
    """`[sources.stackai]` in `.dlt/config.toml` and `.dlt/secrets.toml`."""

    base_url: str = endpoint.DEFAULT_BASE_URL
    api_key: TSecretStrValue | None = None
    flows: list[Any] | None = None
    page_size: int = endpoint.DEFAULT_PAGE_SIZE
    initial_start_date: str | None = None
    lookback: str = "PT1H"
    max_open_run_age: str = "P7D"
    max_open_run_checks: int = 50
    feedback_lookback: str | None = None
    feedback_interval: str = "P1D"
    max_concurrent_flows: int = 8
    max_concurrent_requests: int = 8
    duckdb_memory_limit: str | None = DEFAULT_MEMORY_LIMIT
    connect_timeout: float = 10.0
    lock_timeout: float = 0.0


@dataclass(frozen=True)
class SyncSettings:
    """Everything one sync needs, validated.

    Attributes:
        base_url: API root without trailing slash.
        api_key: Bearer key (a secret: never print this object's repr in logs; repr hides it).
        flows: Distinct flows to sync, in configuration order.
        duckdb_path: The DuckDB file; dlt's working directory sits beside it.
        page_size: Runs per request.
        rules: Window rules: initial start, lookback, open-run re-checks, feedback pass.
        max_concurrent_flows: Flows fetched at once.
        since / until: Backfill window for this run only (aware UTC) or None.
        full_refresh: Drop what is stored for the selected flows (rows and state) and reload.
        http: Timeouts, retries and the request limit.
        lock_timeout: Seconds to wait for another sync of the same DuckDB file to finish.
        duckdb_memory_limit: DuckDB's memory limit while loading ("512MB"), or None.
    """

    base_url: str
    api_key: str = field(repr=False)
    flows: tuple[FlowRef, ...]
    duckdb_path: Path
    page_size: int = endpoint.DEFAULT_PAGE_SIZE
    rules: WindowRules = field(default_factory=WindowRules)
    max_concurrent_flows: int = 8
    since: datetime | None = None
    until: datetime | None = None
    full_refresh: bool = False
    http: HttpSettings = field(default_factory=HttpSettings)
    lock_timeout: float = 0.0
    duckdb_memory_limit: str | None = DEFAULT_MEMORY_LIMIT

    def with_overrides(self, **changes: Any) -> SyncSettings:
        return replace(self, **changes)


def parse_instant(value: str, what: str) -> datetime:
    """Parse an ISO-8601 date or date-time given by a user (naive = UTC).

    Raises:
        ConfigError: naming `what` (a flag or key) and the bad value.
    """
    try:
        return parse_api_datetime(value)
    except ValueError:
        raise ConfigError(
            f"{what}: expected an ISO-8601 date or date-time, got {value!r}"
        ) from None


def parse_duration(value: Any, what: str) -> timedelta:
    """Parse a duration: ISO-8601 (`PT1H`, `P7D`) or a number of seconds.

    Raises:
        ConfigError: naming `what` and the bad value.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        try:
            parsed = pendulum.parse(str(value).strip())
        except Exception:
            parsed = None
        if not isinstance(parsed, pendulum.Duration):
            raise ConfigError(
                f"{what}: expected an ISO-8601 duration like PT1H or seconds, got {value!r}"
            )
        seconds = parsed.total_seconds()
    if seconds < 0:
        raise ConfigError(f"{what}: must not be negative, got {value!r}")
    return timedelta(seconds=seconds)


LOOPBACK_HOSTS = frozenset({"localhost"})


def check_base_url(url: str, allow_insecure_http: bool = False) -> str:
    """Validate the API root: https, or plain http only to a loopback host (the simulator).

    Returns:
        The URL without trailing slash.

    Raises:
        ConfigError: another scheme, no host, or http to a non-loopback host without
            `allow_insecure_http` (the API key would cross the network in clear text).
    """
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base_url must be an https:// URL, got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError("base_url must not carry credentials, a query or a fragment")
    try:
        parts.port  # noqa: B018 (urlsplit parses the port lazily and raises here)
    except ValueError:
        raise ConfigError(f"base_url has an invalid port: {url!r}") from None
    host = parts.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address: only "localhost" is trusted to stay local
        loopback = host in LOOPBACK_HOSTS
    if parts.scheme == "http" and not loopback and not allow_insecure_http:
        raise ConfigError(
            f"base_url {url!r} is plain http: the API key would travel unencrypted. Use https,"
            " or pass --allow-insecure-http if you really mean it"
        )
    return url


def _valid_memory_limit(limit: str) -> bool:
    # DuckDB itself says what it accepts (512MB, 1.5GB, 2GiB ...): an in-memory database is free.
    try:
        duckdb.connect(config={"memory_limit": limit}).close()
    except duckdb.Error:
        return False
    return True


def load_settings(
    *,
    flows: list[str] | None = None,
    base_url: str | None = None,
    duckdb_path: str | None = None,
    page_size: int | None = None,
    since: str | None = None,
    until: str | None = None,
    api_key: str | None = None,
    full_refresh: bool = False,
    allow_insecure_http: bool = False,
) -> SyncSettings:
    """Resolve the configuration and apply command-line overrides (None = not given).

    Returns:
        Validated `SyncSettings`.

    Raises:
        ConfigError: a missing API key, no flow, or any invalid value, as one line naming the
            key or flag. The message never contains the API key.
    """
    try:
        config = resolve_configuration(StackAIConfiguration(), sections=("sources", "stackai"))
    except ConfigurationException as exc:
        raise ConfigError(f"configuration: {str(exc).splitlines()[0]}") from None

    # The environment wins over files, as everywhere in dlt: dlt's own variable first, then
    # the short one, then the files (config.api_key also holds dlt's variable when no file has
    # a key, so it is read directly here).
    key = (
        api_key or os.environ.get(API_KEY_DLT_ENV) or os.environ.get(API_KEY_ENV) or config.api_key
    )
    if key and key.strip() == EXAMPLE_PLACEHOLDER_KEY:
        raise ConfigError(
            "the API key is still the placeholder of .dlt/secrets.toml.example: put your key in"
            f" .dlt/secrets.toml (read from {settings_dir()}) or set STACKAI_API_KEY"
        )
    # A key read with `$(cat key.txt)` from a file with a CRLF ending carries the CR: HTTP
    # libraries then refuse the header and quote it, key included, in their error.
    key = key.strip() if key else key
    if not key:
        raise ConfigError(
            "no API key: set SOURCES__STACKAI__API_KEY or STACKAI_API_KEY, or api_key in"
            f" [sources.stackai] of .dlt/secrets.toml (read from {settings_dir()})"
        )
    if not key.isprintable() or any(char.isspace() for char in key):
        raise ConfigError(
            "the API key contains spaces or control characters (not shown): check how it is set"
            " (SOURCES__STACKAI__API_KEY, STACKAI_API_KEY or api_key in .dlt/secrets.toml)"
        )
    try:
        selected = (
            parse_flows(flows, "--flow")
            if flows
            else parse_flows(config.flows, "sources.stackai.flows")
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not selected:
        raise ConfigError(
            'no flow to sync: list them as flows = ["ORG_ID/FLOW_ID", ...] in [sources.stackai]'
            f" of .dlt/config.toml (read from {settings_dir()}), or pass --flow ORG_ID/FLOW_ID"
        )
    size = page_size if page_size is not None else config.page_size
    if size < 1:
        raise ConfigError(f"page_size must be at least 1, got {size}")
    if config.max_concurrent_flows < 1:
        raise ConfigError(
            f"sources.stackai.max_concurrent_flows must be at least 1, got"
            f" {config.max_concurrent_flows}"
        )
    url = check_base_url(base_url or config.base_url or "", allow_insecure_http)
    if config.lock_timeout < 0:
        raise ConfigError(
            f"sources.stackai.lock_timeout must not be negative, got {config.lock_timeout}"
        )
    for name in ("max_concurrent_requests", "connect_timeout"):
        if getattr(config, name) <= 0:
            raise ConfigError(
                f"sources.stackai.{name} must be positive, got {getattr(config, name)}"
            )
    try:
        runtime = resolve_configuration(RuntimeConfiguration())
    except ConfigurationException as exc:
        raise ConfigError(f"configuration [runtime]: {str(exc).splitlines()[0]}") from None
    for name in ("request_timeout", "request_max_retry_delay"):
        if getattr(runtime, name) <= 0:
            raise ConfigError(f"runtime.{name} must be positive, got {getattr(runtime, name)}")
    if runtime.request_backoff_factor < 0:
        raise ConfigError(
            f"runtime.request_backoff_factor must not be negative, got"
            f" {runtime.request_backoff_factor}"
        )
    limit = config.duckdb_memory_limit
    if limit and not _valid_memory_limit(limit):
        raise ConfigError(
            "sources.stackai.duckdb_memory_limit must be a size such as 512MB or 2GB,"
            f" got {limit!r}"
        )
    http = HttpSettings(
        connect_timeout=float(config.connect_timeout),
        read_timeout=float(runtime.request_timeout),
        max_attempts=max(1, int(runtime.request_max_attempts)),
        backoff_factor=float(runtime.request_backoff_factor),
        max_retry_delay=float(runtime.request_max_retry_delay),
        max_concurrent_requests=config.max_concurrent_requests,
    )
    if duckdb_path is not None and not duckdb_path.strip():
        raise ConfigError("--duckdb is empty (an unset variable in a crontab?)")
    path = (
        duckdb_path
        or dlt.config.get("destination.duckdb.credentials", str)
        or (DEFAULT_DUCKDB_PATH)
    )
    if config.max_open_run_checks < 0:
        raise ConfigError(
            "sources.stackai.max_open_run_checks must not be negative, got"
            f" {config.max_open_run_checks}"
        )
    initial = config.initial_start_date
    rules = WindowRules(
        initial_start=(
            parse_instant(initial, "sources.stackai.initial_start_date") if initial else None
        ),
        lookback=parse_duration(config.lookback, "sources.stackai.lookback"),
        max_open_run_age=parse_duration(
            config.max_open_run_age, "sources.stackai.max_open_run_age"
        ),
        max_open_run_checks=config.max_open_run_checks,
        feedback_lookback=(
            parse_duration(config.feedback_lookback, "sources.stackai.feedback_lookback")
            if config.feedback_lookback
            else None
        ),
        feedback_interval=parse_duration(
            config.feedback_interval, "sources.stackai.feedback_interval"
        ),
    )
    settings = SyncSettings(
        base_url=url,
        api_key=key,
        flows=selected,
        duckdb_path=Path(path),
        page_size=size,
        rules=rules,
        max_concurrent_flows=config.max_concurrent_flows,
        since=parse_instant(since, "--since") if since else None,
        until=parse_instant(until, "--until") if until else None,
        full_refresh=full_refresh,
        http=http,
        lock_timeout=float(config.lock_timeout),
        duckdb_memory_limit=config.duckdb_memory_limit or None,
    )
    if settings.since and settings.until and settings.since > settings.until:
        raise ConfigError(f"--since ({since}) is after --until ({until})")
    return settings
