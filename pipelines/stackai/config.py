"""The source's configuration, the dlt way: `[sources.stackai]` keys, checked once when resolved.

Where values come from, highest first: arguments (the CLI's flags); dlt's environment variables
(`SOURCES__STACKAI__<KEY>`); `STACKAI_API_KEY` for the key; `.dlt/secrets.toml`;
`.dlt/config.toml`. `StackAIConfiguration.on_resolved` checks every value and raises one
`ConfigError` naming the key, so a bad value never reaches a request.
"""

import contextlib
import ipaddress
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pendulum
from dlt.common.configuration import configspec, resolve_configuration
from dlt.common.configuration.container import Container
from dlt.common.configuration.exceptions import ConfigurationException
from dlt.common.configuration.providers.provider import ConfigProvider
from dlt.common.configuration.providers.toml import TomlProviderReadException
from dlt.common.configuration.specs import BaseConfiguration, RuntimeConfiguration
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext
from dlt.common.typing import TSecretStrValue

from pipelines.stackai import endpoint
from pipelines.stackai.dates import parse_api_datetime
from pipelines.stackai.flows import FlowRef, parse_flows
from pipelines.stackai.http import HttpSettings
from pipelines.stackai.window import WindowRules

SECTION = "stackai"
"""`[sources.stackai]`: the source's name and config section."""
API_KEY_ENV = "STACKAI_API_KEY"
API_KEY_DLT_ENV = "SOURCES__STACKAI__API_KEY"
EXAMPLE_PLACEHOLDER_KEY = "your StackAI API key"
"""The value `.dlt/secrets.toml.example` ships with."""
LOOPBACK_HOSTS = frozenset({"localhost"})


class ConfigError(ValueError):
    """The configuration cannot work. The message is one line naming the key or flag and never
    holds the API key."""


def settings_dir() -> Path:
    """The `.dlt` folder dlt reads: in the current directory, or under `DLT_PROJECT_DIR`."""
    return Path(os.environ.get("DLT_PROJECT_DIR") or os.getcwd()) / ".dlt"


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


def check_api_key(key: str | None) -> str:
    """The key, stripped of a file's line ending.

    Raises:
        ConfigError: no key, the example's placeholder, or spaces or control characters inside
            (the key is never shown).
    """
    if key and key.strip() == EXAMPLE_PLACEHOLDER_KEY:
        raise ConfigError(
            "the API key is still the placeholder of .dlt/secrets.toml.example: put your key in"
            f" .dlt/secrets.toml (read from {settings_dir()}) or set {API_KEY_ENV}"
        )
    # A key read with `$(cat key.txt)` from a file with a CRLF ending carries the CR: HTTP
    # libraries then refuse the header and quote it, key included, in their error.
    key = key.strip() if key else key
    if not key:
        raise ConfigError(
            f"no API key: set {API_KEY_DLT_ENV} or {API_KEY_ENV}, or api_key in"
            f" [sources.stackai] of .dlt/secrets.toml (read from {settings_dir()})"
        )
    if not key.isprintable() or any(char.isspace() for char in key):
        raise ConfigError(
            "the API key contains spaces or control characters (not shown): check how it is set"
            f" ({API_KEY_DLT_ENV}, {API_KEY_ENV} or api_key in .dlt/secrets.toml)"
        )
    return key


class _StackAIKeyEnvironment(ConfigProvider):
    """`STACKAI_API_KEY`, consulted right after dlt's own environment variables and before the
    files, so the environment wins over `secrets.toml` as everywhere in dlt."""

    def get_value(
        self, key: str, hint: type[Any], pipeline_name: str | None, *sections: str
    ) -> tuple[Any | None, str]:
        if key == "api_key" and sections[:2] == ("sources", SECTION):
            return os.environ.get(API_KEY_ENV), API_KEY_ENV
        return None, key

    @property
    def supports_secrets(self) -> bool:
        return True

    @property
    def supports_sections(self) -> bool:
        return True

    @property
    def name(self) -> str:
        return API_KEY_ENV


def register_key_environment() -> None:
    """Let dlt read the key from `STACKAI_API_KEY` too (idempotent; dlt may rebuild its
    providers when its run context changes, so this runs again before each resolution).

    Raises:
        ConfigError: a `.dlt/*.toml` file cannot be read, naming it and where it is wrong.
    """
    try:
        providers = Container()[PluggableRunContext].providers
    except TomlProviderReadException as exc:
        raise ConfigError(describe_toml_error(exc)) from None
    if API_KEY_ENV not in providers:
        providers.providers.insert(1, _StackAIKeyEnvironment())


def describe_toml_error(exc: TomlProviderReadException) -> str:
    """One line for a `.dlt/config.toml` or `secrets.toml` that does not parse: the file (of
    those dlt looked at, the ones that exist) and TOML's own words, line and column included."""
    found = [path for path in exc.full_paths if Path(path).is_file()] or exc.full_paths
    detail = str(exc).split(":\n", 1)[-1].strip().splitlines()[0]
    # tomlkit says where the key is set again (0.15.3 and later) or nowhere (earlier), never
    # where it was set first: the lines that set the key, in every file
    duplicate = re.match(r'Key "(.+)" already exists\.', detail)
    if duplicate:
        key = re.compile(rf"\s*[\"']?{re.escape(duplicate.group(1))}[\"']?\s*=")
        lines = [
            f"{path} line {number}"
            for path in found
            if Path(path).is_file()
            for number, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1)
            if key.match(line)
        ]
        detail += f" ({', '.join(lines)})" if lines else ""
    return f"cannot read {' or '.join(found)}: {detail}"


# No `from __future__ import annotations` here: dlt reads these hints at run time, also from
# subclasses in other modules (settings.SyncConfiguration), where names like TSecretStrValue
# would not resolve from a string.
@configspec
class StackAIConfiguration(BaseConfiguration):
    """`[sources.stackai]`: what the `stackai` source needs (README, "Configuration").

    Durations are ISO-8601 (`PT1H`) or seconds; dates ISO-8601 (UTC if naive).
    """

    flows: list[Any] | None = None
    """`"ORG_ID/FLOW_ID"` strings (or tables with org_id and flow_id)."""
    orgs: list[str] | None = None
    """Org ids whose every flow (as the org summary lists them) is synced, besides `flows`."""
    api_key: TSecretStrValue | None = None
    base_url: str = endpoint.DEFAULT_BASE_URL
    page_size: int = endpoint.DEFAULT_PAGE_SIZE
    initial_start_date: str | None = None
    lookback: Any = "PT1H"
    max_open_run_age: Any = "P7D"
    max_open_run_checks: int = 50
    feedback_lookback: Any | None = "P3D"
    feedback_interval: Any = "P1D"
    max_concurrent_requests: int = 8
    adaptive_concurrency: bool = True
    """Lower the requests in flight while the API throttles (HTTP 429/503), AIMD."""
    time_slices: bool = True
    """Read a flow's window of more than a page as concurrent time slices."""
    connect_timeout: float = 10.0
    allow_insecure_http: bool = False
    """Accept a plain http:// base_url to a non-loopback host (the key travels unencrypted)."""

    def on_resolved(self) -> None:
        self.api_key = check_api_key(self.api_key)
        self.base_url = check_base_url(self.base_url or "", self.allow_insecure_http)
        if self.page_size < 1:
            raise ConfigError(f"page_size must be at least 1, got {self.page_size}")
        for name in ("max_concurrent_requests", "connect_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"sources.stackai.{name} must be positive, got {getattr(self, name)}"
                )
        if self.max_open_run_checks < 0:
            raise ConfigError(
                "sources.stackai.max_open_run_checks must not be negative, got"
                f" {self.max_open_run_checks}"
            )
        self.window_rules()  # every duration and date parses

    def flow_refs(self, what: str = "sources.stackai.flows") -> tuple[FlowRef, ...]:
        """The distinct flows configured by hand, in configuration order.

        Raises:
            ConfigError: a bad entry, or no flow and no org at all (naming `what`).
        """
        try:
            flows = parse_flows(self.flows, what)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not flows and not self.org_ids():
            raise ConfigError(
                'no flow to sync: list them as flows = ["ORG_ID/FLOW_ID", ...] or their orgs as'
                ' orgs = ["ORG_ID", ...] in [sources.stackai] of .dlt/config.toml (read from'
                f" {settings_dir()}), or pass --flow ORG_ID/FLOW_ID or --org ORG_ID"
            )
        return flows

    def org_ids(self) -> tuple[str, ...]:
        """The distinct orgs to discover flows in, validated like a flow's org id.

        Raises:
            ConfigError: an empty id, or one with spaces or control characters.
        """
        orgs = [self.orgs] if isinstance(self.orgs, str) else list(self.orgs or ())
        for org in orgs:
            try:
                FlowRef(str(org), "flow")
            except ValueError as exc:
                raise ConfigError(f"orgs: bad org {org!r}: {exc}") from None
        return tuple(dict.fromkeys(str(org).strip() for org in orgs))

    def window_rules(self) -> WindowRules:
        """The incremental rules these keys set (see `window.WindowRules`).

        Raises:
            ConfigError: a duration or date that does not parse, naming its key.
        """
        key = "sources.stackai."
        initial = self.initial_start_date
        feedback = self.feedback_lookback
        return WindowRules(
            initial_start=parse_instant(initial, key + "initial_start_date") if initial else None,
            lookback=parse_duration(self.lookback, key + "lookback"),
            max_open_run_age=parse_duration(self.max_open_run_age, key + "max_open_run_age"),
            max_open_run_checks=self.max_open_run_checks,
            feedback_lookback=parse_duration(feedback, key + "feedback_lookback")
            if feedback
            else None,
            feedback_interval=parse_duration(self.feedback_interval, key + "feedback_interval"),
        )

    def http_settings(self) -> HttpSettings:
        """Timeouts and retries: these keys plus dlt's `[runtime]` request settings.

        Raises:
            ConfigError: a `[runtime]` value that cannot work, naming it.
        """
        try:
            runtime = resolve_configuration(RuntimeConfiguration())
        except ConfigurationException as exc:
            raise ConfigError(f"configuration [runtime]: {str(exc).splitlines()[0]}") from None
        for name in ("request_timeout", "request_max_retry_delay"):
            if getattr(runtime, name) <= 0:
                raise ConfigError(f"runtime.{name} must be positive, got {getattr(runtime, name)}")
        if runtime.request_backoff_factor < 0:
            raise ConfigError(
                "runtime.request_backoff_factor must not be negative, got"
                f" {runtime.request_backoff_factor}"
            )
        return HttpSettings(
            connect_timeout=float(self.connect_timeout),
            read_timeout=float(runtime.request_timeout),
            max_attempts=max(1, int(runtime.request_max_attempts)),
            backoff_factor=float(runtime.request_backoff_factor),
            max_retry_delay=float(runtime.request_max_retry_delay),
            max_concurrent_requests=self.max_concurrent_requests,
            adaptive_concurrency=bool(self.adaptive_concurrency),
        )


with contextlib.suppress(ConfigError):  # a bad TOML file is reported where config is read
    register_key_environment()
