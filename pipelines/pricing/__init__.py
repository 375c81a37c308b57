"""What LLM calls cost: StackAI's providers mapped to genai-prices, overrides, and the pricing of
each call at the price in force on its run's date (`prices.PriceBook`)."""

from pipelines.pricing.prices import ModelPriceOverride, Price, PriceBook, parse_overrides
from pipelines.pricing.providers import PROVIDER_IDS, provider_id

__all__ = [
    "PROVIDER_IDS",
    "ModelPriceOverride",
    "Price",
    "PriceBook",
    "parse_overrides",
    "provider_id",
]
