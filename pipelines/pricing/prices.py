"""Price LLM calls with genai-prices (pydantic's offline price data: price history with start
dates, tiered prices) or with a user's own overrides, at the price in force on the run's date.

Per call, genai-prices picks the price (`ModelInfo.get_prices`: start dates, times of day) and
its own `calc_unit_price` applies the tiers (a tier reached by the call's input tokens prices all
its tokens). Calling the library's `calc_price` per call gives the same figures (tests compare
them) but costs about 100 microseconds a call; this costs a few.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, TieredPrices, calc_unit_price

from pipelines.pricing.providers import provider_id
from pipelines.stackai.config import ConfigError

PER_MTOK = 1_000_000
PER_KCOUNT = 1_000
LIBRARY = f"genai-prices {genai_prices.__version__}"
"""`price_source` of a call priced by the library."""
OVERRIDE = "override"
"""`price_source` of a call priced by `[sources.stackai.model_prices]`."""


@dataclass(frozen=True)
class ModelPriceOverride:
    """A user's price for one StackAI provider/model, in USD per million tokens.

    Attributes:
        provider, model_id: as StackAI sends them in `llm_usage` (matched case-insensitively).
        input_per_mtok, output_per_mtok: USD per 1,000,000 input / output tokens.
        start: the first UTC day it applies to (runs dated earlier keep the library's price);
            None = always.
    """

    provider: str
    model_id: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    start: date | None = None


def parse_overrides(
    value: Mapping[str, Any] | None, where: str = "model_prices"
) -> list[ModelPriceOverride]:
    """Overrides from `[sources.stackai.model_prices]` (or its JSON in the environment).

    Args:
        value: `{"PROVIDER/MODEL_ID": {"input_per_mtok": 2.5, "output_per_mtok": 10,
            "from": "2026-01-01"}}`; a key may also hold a list of such tables (prices that
            changed over time). None or {} = no overrides.
        where: the key's name for messages.

    Returns:
        The overrides, in order.

    Raises:
        ConfigError: a key without `/`, a missing or negative price, an unknown field or a bad
            date, naming the key.
    """
    overrides: list[ModelPriceOverride] = []
    for key, spec in (value or {}).items():
        provider, _, model_id = str(key).partition("/")
        if not provider.strip() or not model_id.strip():
            raise ConfigError(f'{where}: key {key!r} must be "PROVIDER/MODEL_ID"')
        for item in spec if isinstance(spec, list) else [spec]:
            if not isinstance(item, Mapping):
                raise ConfigError(f"{where}.{key}: a table with input_per_mtok and output_per_mtok")
            unknown = set(item) - {"input_per_mtok", "output_per_mtok", "from"}
            if unknown:
                raise ConfigError(f"{where}.{key}: unknown field(s) {', '.join(sorted(unknown))}")
            prices = []
            for field in ("input_per_mtok", "output_per_mtok"):
                if field not in item:
                    raise ConfigError(
                        f"{where}.{key}.{field}: a price in USD per million tokens is required"
                    )
                try:
                    if isinstance(item[field], bool):
                        raise InvalidOperation
                    price = Decimal(str(item[field]))
                except InvalidOperation:
                    raise ConfigError(
                        f"{where}.{key}.{field}: must be a number (USD per million tokens),"
                        f" got {item[field]!r}"
                    ) from None
                if not price.is_finite() or price < 0:
                    raise ConfigError(f"{where}.{key}.{field}: must be a number >= 0, got {price}")
                prices.append(price)
            start = None
            if item.get("from") is not None:
                given = item["from"]
                try:
                    if isinstance(given, datetime):
                        raise ValueError
                    start = given if isinstance(given, date) else date.fromisoformat(str(given))
                except ValueError:
                    raise ConfigError(
                        f"{where}.{key}.from: a day such as 2026-01-01 (prices change by UTC"
                        f" day), got {given!r}"
                    ) from None
            overrides.append(
                ModelPriceOverride(provider.strip(), model_id.strip(), prices[0], prices[1], start)
            )
    days: dict[tuple[str, str, date | None], ModelPriceOverride] = {}
    for override in overrides:
        day = (override.provider.lower(), override.model_id.lower(), override.start)
        if day in days:
            when = override.start.isoformat() if override.start else "always (no from)"
            raise ConfigError(
                f"{where}: two prices for {override.provider}/{override.model_id} from the same"
                f" day ({when}): keep one"
            )
        days[day] = override
    return overrides


@dataclass(frozen=True)
class Price:
    """What one call cost, in USD, and where the price came from (`LIBRARY` or `OVERRIDE`)."""

    input_cost_usd: Decimal
    output_cost_usd: Decimal
    source: str
    model: str
    """The model the price is for: genai-prices' model id, or the override's MODEL_ID."""
    request_cost_usd: Decimal = Decimal(0)
    """A fee per request some models charge on top of tokens (Perplexity's sonar: USD per
    thousand requests); 0 for the others and for overrides."""

    @property
    def cost_usd(self) -> Decimal:
        return self.input_cost_usd + self.output_cost_usd + self.request_cost_usd


_MISSING = object()


class PriceBook:
    """Prices calls; remembers each provider/model lookup (the library's lookup is slow).

    Args:
        overrides: the user's prices; an override wins over the library for its model from its
            `start` day on.
    """

    def __init__(self, overrides: list[ModelPriceOverride] | None = None) -> None:
        self.overrides: dict[tuple[str, str], list[ModelPriceOverride]] = {}
        for override in overrides or []:
            key = (override.provider.lower(), override.model_id.lower())
            self.overrides.setdefault(key, []).append(override)
        for found in self.overrides.values():
            found.sort(key=lambda o: o.start or date.min)
        self._snapshot = data_snapshot.get_snapshot()
        self._models: dict[tuple[str | None, str], Any] = {}
        payload = [
            [
                o.provider.lower(),
                o.model_id.lower(),
                str(o.input_per_mtok),
                str(o.output_per_mtok),
                o.start.isoformat() if o.start else None,
            ]
            for found in self.overrides.values()
            for o in found
        ]
        digest = hashlib.sha256(json.dumps([LIBRARY, payload]).encode()).hexdigest()[:16]
        self.version = digest
        """Changes when the library's version or any override changes: what was priced under
        another version is priced again."""

    def _model(self, provider: str | None, model_id: str) -> ModelInfo | None:
        key = (provider, model_id)
        found = self._models.get(key, _MISSING)
        if found is _MISSING:
            pid = provider_id(provider)
            found = None
            if pid is not None:
                try:
                    _, found = self._snapshot.find_provider_model(model_id, None, pid, None)
                except LookupError:
                    found = None
            self._models[key] = found
        return found  # type: ignore[return-value]

    def price(
        self,
        provider: str | None,
        model_id: str | None,
        when: datetime,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> Price | None:
        """What one call cost.

        Args:
            provider, model_id: as StackAI sends them (`llm_usage`).
            when: the run's `date` (aware; the price in force on its UTC day applies).
            input_tokens, output_tokens: counts (None counts as 0).

        Returns:
            The price, or None when neither an override nor genai-prices knows the model
            (a local model, an unknown id, a provider the library does not price).
        """
        if model_id is None:
            return None
        when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        tokens_in = Decimal(input_tokens or 0)
        tokens_out = Decimal(output_tokens or 0)
        for override in reversed(
            self.overrides.get(((provider or "").lower(), model_id.lower()), [])
        ):
            if override.start is None or when.date() >= override.start:
                return Price(
                    override.input_per_mtok * tokens_in / PER_MTOK,
                    override.output_per_mtok * tokens_out / PER_MTOK,
                    OVERRIDE,
                    override.model_id,
                )
        model = self._model(provider, model_id)
        if model is None:
            return None
        prices = model.get_prices(when)
        if prices.input_mtok is None and prices.output_mtok is None:
            return None
        total_in = input_tokens or 0
        return Price(
            calc_unit_price(prices.input_mtok, tokens_in, total_in, PER_MTOK),
            calc_unit_price(prices.output_mtok, tokens_out, total_in, PER_MTOK),
            LIBRARY,
            model.id,
            # one call is one request
            calc_unit_price(getattr(prices, "requests_kcount", None), 1, total_in, PER_KCOUNT),
        )


__all__ = [
    "LIBRARY",
    "OVERRIDE",
    "ModelPriceOverride",
    "Price",
    "PriceBook",
    "TieredPrices",
    "parse_overrides",
]
