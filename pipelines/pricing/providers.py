"""StackAI's LLM providers (`LLMProviderEnum`, components.schemas.LLMProviderEnum of the
contract) mapped to genai-prices' provider ids: the one place this mapping lives."""

from __future__ import annotations

PROVIDER_IDS: dict[str, str | None] = {
    "Anthropic": "anthropic",
    "Azure": "azure",  # Azure OpenAI: OpenAI's models at Azure's prices
    "Bedrock": "aws",  # AWS Bedrock: model ids such as anthropic.claude-3-haiku-20240307-v1:0
    "Cerebras": "cerebras",
    "Google": "google",
    "Google_service_account": "google",  # the same Gemini models, another way to authenticate
    "Groq": "groq",
    "Local": None,  # a model the team runs itself: no list price (use an override)
    "Meta": "meta",
    "Mistral": "mistral",
    "OpenAI": "openai",
    "Perplexity": "perplexity",
    "Replicate": None,  # priced per second of compute, not per token: not in genai-prices
    "TogetherAI": "together",
    "XAI": "x-ai",
}
"""StackAI provider -> genai-prices provider id; None: the library has no token prices for it.
A provider StackAI adds later is looked up by its lowercase name (`provider_id`)."""


def provider_id(provider: str | None) -> str | None:
    """genai-prices' provider id for a StackAI provider name (case-insensitive), or None.

    A name not in `PROVIDER_IDS` (a provider the contract does not list yet) is tried as its
    lowercase self, which is genai-prices' id for most providers; the PriceBook then finds out
    whether the library knows it.
    """
    if provider is None:
        return None
    for name, pid in PROVIDER_IDS.items():
        if name.lower() == provider.strip().lower():
            return pid
    return provider.strip().lower() or None
