"""Pricing one call: the fast path against genai-prices' own `calc_price`, the provider mapping,
and overrides. The expected figures come from the library's public API, never from our code."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest
import yaml
from genai_prices import Usage, calc_price, data_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.pricing import PROVIDER_IDS, ModelPriceOverride, PriceBook, parse_overrides
from pipelines.pricing.prices import LIBRARY, OVERRIDE
from pipelines.pricing.providers import provider_id
from pipelines.stackai.config import ConfigError

CONTRACT = Path(__file__).resolve().parents[1] / "contract" / "analytics-openapi.yml"

CALLS = [
    # provider, model_id, when, input_tokens, output_tokens
    ("OpenAI", "gpt-4o", datetime(2024, 6, 1, tzinfo=UTC), 1_000, 200),
    ("OpenAI", "gpt-4o", datetime(2025, 6, 1, tzinfo=UTC), 1_000, 200),
    ("OpenAI", "gpt-4o-mini", datetime(2025, 2, 1, 23, 59, tzinfo=UTC), 12_345, 678),
    ("Anthropic", "claude-3-5-sonnet-20241022", datetime(2024, 12, 1, tzinfo=UTC), 5_000, 1_000),
    ("Anthropic", "claude-3-5-haiku", datetime(2025, 3, 1, tzinfo=UTC), 40_000, 2_000),
    # tiered: Gemini prices every token higher once a call's input passes the threshold
    ("Google", "gemini-1.5-pro", datetime(2025, 6, 1, tzinfo=UTC), 100_000, 500),
    ("Google", "gemini-1.5-pro", datetime(2025, 6, 1, tzinfo=UTC), 300_000, 500),
    ("Google_service_account", "gemini-2.5-pro", datetime(2025, 9, 1, tzinfo=UTC), 250_000, 9),
    ("XAI", "grok-2-latest", datetime(2025, 1, 1, tzinfo=UTC), 100, 100),
    ("Bedrock", "anthropic.claude-3-haiku-20240307-v1:0", datetime(2025, 1, 1, tzinfo=UTC), 7, 3),
    ("Mistral", "mistral-large-latest", datetime(2025, 5, 5, tzinfo=UTC), 999, 1),
    ("Groq", "llama-3.1-70b-versatile", datetime(2024, 11, 1, tzinfo=UTC), 10_000, 0),
    # a fee per request on top of tokens
    ("Perplexity", "sonar", datetime(2025, 4, 1, tzinfo=UTC), 800, 300),
    ("Perplexity", "sonar-pro", datetime(2025, 4, 1, tzinfo=UTC), 0, 0),
    # prices that changed on a date: o3 on 2025-06-10, mistral-small-latest on 2026-03-16
    ("OpenAI", "o3", datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC), 20_000, 5_000),
    ("OpenAI", "o3", datetime(2025, 6, 10, tzinfo=UTC), 20_000, 5_000),
    ("Mistral", "mistral-small-latest", datetime(2026, 3, 15, 12, tzinfo=UTC), 3_000, 300),
    ("Mistral", "mistral-small-latest", datetime(2026, 3, 16, 12, tzinfo=UTC), 3_000, 300),
]


def library_price(provider: str, model: str, when: datetime, tokens_in: int, tokens_out: int):
    return calc_price(
        Usage(input_tokens=tokens_in, output_tokens=tokens_out),
        model,
        provider_id=PROVIDER_IDS[provider],
        genai_request_timestamp=when,
    )


@pytest.mark.parametrize("call", CALLS, ids=lambda c: f"{c[1]}-{c[2].date()}-{c[3]}")
def test_a_call_costs_what_genai_prices_says(call):
    expected = library_price(*call)
    got = PriceBook().price(*call)
    assert got is not None
    assert got.input_cost_usd == expected.input_price
    assert got.output_cost_usd == expected.output_price
    assert got.cost_usd == expected.total_price
    assert got.source == LIBRARY == f"genai-prices {genai_prices.__version__}"
    assert got.model == expected.model.id


def test_a_tier_prices_the_whole_call_above_its_threshold():
    book = PriceBook()
    when = datetime(2025, 6, 1, tzinfo=UTC)
    below = book.price("Google", "gemini-1.5-pro", when, 100_000, 0)
    above = book.price("Google", "gemini-1.5-pro", when, 300_000, 0)
    assert below is not None and above is not None
    # per token, the long call pays more: the tier applies to all its tokens
    assert above.input_cost_usd / 300_000 > below.input_cost_usd / 100_000


def test_a_price_change_applies_from_its_utc_day():
    book = PriceBook()
    # o3's price fell on 2025-06-10 (genai-prices' history); a run's UTC day decides
    early = book.price("OpenAI", "o3", datetime(2025, 6, 9, 23, 59, tzinfo=UTC), 1_000_000, 0)
    late = book.price("OpenAI", "o3", datetime(2025, 6, 10, tzinfo=UTC), 1_000_000, 0)
    assert early is not None and late is not None
    assert early.input_cost_usd > late.input_cost_usd


@settings(max_examples=200, deadline=None)
@given(
    call=st.sampled_from(CALLS),
    when=st.datetimes(
        min_value=datetime(2023, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
    ),
    tokens_in=st.integers(min_value=0, max_value=3_000_000),
    tokens_out=st.integers(min_value=0, max_value=100_000),
)
def test_any_date_and_size_costs_what_genai_prices_says(call, when, tokens_in, tokens_out):
    provider, model = call[0], call[1]
    expected = library_price(provider, model, when, tokens_in, tokens_out)
    got = PriceBook().price(provider, model, when, tokens_in, tokens_out)
    assert got is not None
    assert (got.input_cost_usd, got.output_cost_usd) == (
        expected.input_price,
        expected.output_price,
    )
    assert got.cost_usd == expected.total_price


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("Local", "llama3:8b-instruct-q4"),
        ("Replicate", "meta/meta-llama-3-70b-instruct"),
        ("OpenAI", "my-fine-tune-that-does-not-exist"),
        ("NewProvider", "gpt-4o"),
        ("OpenAI", None),
    ],
)
def test_a_call_nobody_can_price_has_no_price(provider, model):
    assert PriceBook().price(provider, model, datetime(2025, 1, 1, tzinfo=UTC), 10, 10) is None


def test_every_stackai_provider_is_mapped_to_a_genai_prices_provider_or_none():
    contract = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))
    providers = contract["components"]["schemas"]["LLMProviderEnum"]["enum"]
    assert sorted(PROVIDER_IDS) == sorted(providers)
    known = {p.id for p in data_snapshot.get_snapshot().providers}
    for name, pid in PROVIDER_IDS.items():
        assert pid is None or pid in known, f"{name} -> {pid} is not a genai-prices provider"
    # a provider StackAI adds later is tried by its own lowercase name
    assert provider_id("Cohere") == "cohere" and provider_id("openai") == "openai"
    assert provider_id("Local") is None and provider_id(None) is None


def test_an_override_wins_over_the_library_from_its_date():
    overrides = parse_overrides(
        {
            "OpenAI/gpt-4o": [
                {"input_per_mtok": 1, "output_per_mtok": 2, "from": "2025-01-01"},
                {"input_per_mtok": "0.5", "output_per_mtok": 1.5, "from": "2025-07-01"},
            ],
            "Local/llama3:8b-instruct-q4": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
        }
    )
    book = PriceBook(overrides)
    before = book.price("OpenAI", "gpt-4o", datetime(2024, 12, 31, 23, tzinfo=UTC), 10**6, 10**6)
    first = book.price("OpenAI", "GPT-4o", datetime(2025, 1, 1, tzinfo=UTC), 10**6, 10**6)
    second = book.price("openai", "gpt-4o", datetime(2025, 8, 1, tzinfo=UTC), 10**6, 10**6)
    local = book.price("Local", "llama3:8b-instruct-q4", datetime(2020, 1, 1, tzinfo=UTC), 10, 0)
    assert before is not None and before.source == LIBRARY
    assert first is not None and (first.input_cost_usd, first.output_cost_usd) == (1, 2)
    assert first.source == OVERRIDE
    assert second is not None and (second.input_cost_usd, second.output_cost_usd) == (
        Decimal("0.5"),
        Decimal("1.5"),
    )
    assert local is not None and local.input_cost_usd == Decimal("0.000001")


def test_the_price_version_follows_overrides():
    plain = PriceBook().version
    assert PriceBook().version == plain
    one = PriceBook([ModelPriceOverride("OpenAI", "gpt-4o", Decimal(1), Decimal(2))]).version
    other = PriceBook([ModelPriceOverride("OpenAI", "gpt-4o", Decimal(1), Decimal(3))]).version
    dated = PriceBook(
        [ModelPriceOverride("OpenAI", "gpt-4o", Decimal(1), Decimal(2), date(2025, 1, 1))]
    ).version
    assert len({plain, one, other, dated}) == 4


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"gpt-4o": {"input_per_mtok": 1, "output_per_mtok": 1}}, 'must be "PROVIDER/MODEL_ID"'),
        ({"OpenAI/gpt-4o": {"input_per_mtok": 1}}, "output_per_mtok: a price"),
        ({"OpenAI/gpt-4o": {"input_per_mtok": -1, "output_per_mtok": 1}}, "must be a number >= 0"),
        ({"OpenAI/gpt-4o": {"input_per_mtok": "x", "output_per_mtok": 1}}, "must be a number"),
        (
            {
                "OpenAI/gpt-4o": {
                    "input_per_mtok": 1,
                    "output_per_mtok": 1,
                    "from": "2026-01-01T12:00",
                }
            },
            "a day such as",
        ),
        (
            {
                "OpenAI/gpt-4o": [
                    {"input_per_mtok": 1, "output_per_mtok": 2, "from": "2026-11-01"},
                    {"input_per_mtok": 3, "output_per_mtok": 4, "from": "2026-11-01"},
                ]
            },
            "two prices for OpenAI/gpt-4o from the same day",
        ),
        ({"OpenAI/gpt-4o": {"input_per_mtok": 1, "output_per_mtok": 1, "from": "soon"}}, "from"),
        ({"OpenAI/gpt-4o": {"input": 1, "output_per_mtok": 1}}, "unknown field(s) input"),
        ({"OpenAI/gpt-4o": 3}, "a table with input_per_mtok"),
    ],
)
def test_a_bad_override_is_refused_naming_the_key(value, message):
    with pytest.raises(ConfigError) as error:
        parse_overrides(value, "sources.stackai.model_prices")
    assert message in str(error.value)
    assert "sources.stackai.model_prices" in str(error.value)
