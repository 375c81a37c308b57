"""How the simulator writes a run's `date`: the ways a FastAPI service may serialise one instant.

The contract declares `ProjectRunSummary.date` as `format: date-time`, but API-NOTES.md warns
that FastAPI often emits naive ISO-8601 (no offset, with or without microseconds), and that
`Z` and `+00:00` are possible too. The simulator mixes all of them, plus a non-UTC offset, so a
client that parses dates with one fixed pattern, or reads a naive date as local time, fails.
Every style below denotes the run's true instant exactly: a style with fewer fractional digits
is only used for an instant that has no more (`snap`), and naive always means UTC.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo


@dataclass(frozen=True)
class DateStyle:
    tz: tzinfo | None
    """Zone the instant is written in; None writes the UTC wall time without an offset."""
    timespec: str
    """`datetime.isoformat` timespec: "microseconds", "milliseconds" or "seconds"."""
    z_suffix: bool = False
    """Write UTC as `Z` instead of `+00:00` (what JavaScript and many JSON encoders do)."""
    weight: int = 1
    """Relative frequency among generated runs."""


STYLES: dict[str, DateStyle] = {
    # Pydantic's default for a naive datetime: the most likely shape of the real API.
    "naive_us": DateStyle(None, "microseconds", weight=50),
    "naive_s": DateStyle(None, "seconds", weight=12),
    "z_ms": DateStyle(UTC, "milliseconds", z_suffix=True, weight=10),
    "z_s": DateStyle(UTC, "seconds", z_suffix=True, weight=5),
    "utc_us": DateStyle(UTC, "microseconds", weight=15),
    "plus2_us": DateStyle(timezone(timedelta(hours=2)), "microseconds", weight=6),
    "minus4_s": DateStyle(timezone(timedelta(hours=-4)), "seconds", weight=2),
}

EXACT_STYLE = "naive_us"
"""A style that writes any instant without loss."""

_NAMES = tuple(STYLES)
_WEIGHTS = tuple(style.weight for style in STYLES.values())


def pick_style(rng: random.Random) -> str:
    """Draw a style name by the weights above."""
    return rng.choices(_NAMES, _WEIGHTS)[0]


def snap(instant: datetime, style: str) -> datetime:
    """Truncate an aware UTC `instant` to the precision `style` writes (so the string is exact)."""
    timespec = STYLES[style].timespec
    if timespec == "seconds":
        return instant.replace(microsecond=0)
    if timespec == "milliseconds":
        return instant.replace(microsecond=instant.microsecond - instant.microsecond % 1000)
    return instant


def place(
    instant: datetime, style: str, not_before: datetime | None = None
) -> tuple[datetime, str]:
    """Fit `instant` to `style`, falling back to an exact style if truncation would move it.

    Args:
        instant: aware UTC datetime.
        style: a key of `STYLES`.
        not_before: the snapped instant must be strictly after this (e.g. a parent run's date,
            or the start of an `advance` interval); None for no bound.

    Returns:
        (instant as written, style actually used).
    """
    snapped = snap(instant, style)
    if not_before is not None and snapped <= not_before:
        return instant, EXACT_STYLE
    return snapped, style


def format_date(instant: datetime, style: str) -> str:
    """Write an aware UTC `instant` in `style`, e.g. `2026-11-29T10:15:30.123456` (naive_us)."""
    spec = STYLES[style]
    utc = instant.astimezone(UTC)
    local = utc.replace(tzinfo=None) if spec.tz is None else utc.astimezone(spec.tz)
    text = local.isoformat(timespec=spec.timespec)
    if spec.z_suffix:
        text = text.removesuffix("+00:00") + "Z"
    return text


def as_utc(value: datetime) -> datetime:
    """Read a datetime the way the API does: naive means UTC; aware is converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
