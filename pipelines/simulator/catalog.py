"""Static material the simulated world is drawn from: flow names, models, texts, error messages.

Nothing here is random; `runs.py` and `world.py` pick from these pools with a seeded RNG.
The texts deliberately mix plain text, JSON, non-ASCII letters and an emoji, because the real
`inputs`/`outputs`/`feedback` fields are free-form strings (API-NOTES.md: "possibly
JSON-encoded, possibly plain text").
"""

from __future__ import annotations

from .contract import LLMProviderEnum as P

FLOW_NAMES = (
    "Support triage",
    "Invoice extractor",
    "Sales email drafter",
    "Contract reviewer",
    "HR policy assistant",
    "Meeting summariser",
    "Lead enrichment",
    "Translation desk",
    "Knowledge base Q&A",
    "Churn risk scorer",
    "Code review bot",
    "Social post writer",
)
"""Project names; an org with more flows than names gets numbered repeats ("Support triage 2")."""

ORG_DOMAINS = ("acme-robotics.com", "nordlicht.de", "blue-harbor.io", "sakura-labs.jp")

MEMBER_NAMES = (
    "maria.garcia",
    "jurgen.muller",
    "aiko.tanaka",
    "sam.okafor",
    "lea.dubois",
    "raj.patel",
    "olga.ivanova",
    "tom.nguyen",
)

END_USER_IDS = ("customer-1042", "cust_7781", "zoë@example.org", "tenant:42/user:9")
"""`user_id`s that API callers pass for their own end users: not StackAI members, any string."""

API_KEY_NAMES = ("Production backend", "Zapier integration", "Staging", "Data team notebook")

MODELS: dict[P, tuple[str, ...]] = {
    P.OPENAI: ("gpt-4o", "gpt-4o-mini", "o3-mini", "gpt-4.1"),
    P.ANTHROPIC: ("claude-3-5-sonnet-20241022", "claude-3-7-sonnet-latest", "claude-3-5-haiku"),
    P.AZURE: ("azure-gpt-4o", "azure-gpt-35-turbo"),
    P.BEDROCK: ("anthropic.claude-3-haiku-20240307-v1:0", "amazon.titan-text-express-v1"),
    P.CEREBRAS: ("llama3.1-8b", "llama-3.3-70b"),
    P.GOOGLE: ("gemini-1.5-pro", "gemini-2.0-flash"),
    P.GOOGLE_SERVICE_ACCOUNT: ("gemini-1.5-flash",),
    P.GROQ: ("llama-3.1-70b-versatile", "mixtral-8x7b-32768"),
    P.LOCAL: ("llama3:8b-instruct-q4",),
    P.META: ("llama-3.1-405b-instruct",),
    P.MISTRAL: ("mistral-large-latest", "mistral-small-latest"),
    P.PERPLEXITY: ("sonar-pro", "sonar"),
    P.REPLICATE: ("meta/meta-llama-3-70b-instruct",),
    P.TOGETHERAI: ("mistralai/Mixtral-8x22B-Instruct-v0.1",),
    P.XAI: ("grok-2-latest", "grok-beta"),
}

PROVIDER_WEIGHTS: dict[P, int] = {
    P.OPENAI: 30,
    P.ANTHROPIC: 22,
    P.AZURE: 8,
    P.GOOGLE: 8,
    P.BEDROCK: 5,
    P.MISTRAL: 5,
    P.GROQ: 4,
    P.XAI: 3,
    P.PERPLEXITY: 3,
    P.CEREBRAS: 2,
    P.GOOGLE_SERVICE_ACCOUNT: 2,
    P.META: 2,
    P.TOGETHERAI: 2,
    P.REPLICATE: 2,
    P.LOCAL: 2,
}

PROMPTS = (
    "My order #48213 hasn't arrived yet, can you check?",
    "Please extract the totals from invoice INV-2026-0412.",
    "Summarise the attached meeting notes in three bullet points.",
    "Übersetze bitte: »Die Lieferung kommt morgen.«",
    "¿Dónde está mi pedido? Lo necesito antes del viernes.",
    "日本語で要約してください: quarterly revenue grew 12%.",
    "Draft a follow-up email to the lead from yesterday's demo 🚀",
    "Is clause 7.2 (limitation of liability) standard for a SaaS MSA?",
    "How many vacation days do new hires get in year one?",
    "Review this diff: `- retries = 3` / `+ retries = 5`",
)

ANSWERS = (
    "Category: shipping; priority: high; route to: logistics team.",
    "Total: 1,284.50 EUR (net 1,079.41, VAT 205.09).",
    "• Budget approved\n• Launch moved to Q3\n• Hiring freeze lifted",
    "The delivery arrives tomorrow.",
    "Tu pedido llegará el jueves. ¡Gracias por tu paciencia!",
    "四半期の売上は12%増加しました。",
    "Hi Dana — great talking yesterday! Attached is the pricing we discussed. 🙂",
    "Clause 7.2 is within market norms, but the cap excludes data-breach claims.",
    "New hires get 20 days in year one, pro-rated from the start date.",
    "LGTM, but add a backoff so 5 retries do not hammer the upstream.",
)

FEEDBACK_RATINGS = (
    (5, "Spot on, thanks!"),
    (2, "Wrong invoice total, it missed the discount line."),
    (3, "Too long."),
    (5, "Parfait, merci 👍"),
    (1, "Hallucinated a clause that is not in the contract."),
)
"""(rating 1-5, comment) pairs for JSON feedback."""

FEEDBACK_TEXTS = ("👍", "great answer", "did not answer my question", "needs a human 🙃")

CANCEL_MESSAGES = ("Run cancelled by user", "Run cancelled: superseded by a newer request")

ERROR_TEMPLATES = (
    "Timeout after {seconds}s calling node llm-{node}",
    "Rate limit exceeded for model {model} (request {hex12})",
    "Upstream {provider} API returned {status}: Service Unavailable",
    "Node 'in-{node}' received invalid input: expected string, got null",
    "Knowledge base kb-{hex6} not found or not indexed",
    "Output validation failed at node out-{node}: missing key 'answer'",
)
"""FAILED runs' `error`: the ids and numbers vary per run, as the real messages do."""

PROJECT_TYPES = ("workflow", "workflow", "workflow", "agent")
"""`project_type` of the org summary; drawn uniformly, so three workflows to one agent."""
PUBLIC_UI_TYPES = ("form", "chat", "batch")
