"""FHIR dates and dateTimes read from the server, as aware datetimes.

EHRs write every precision FHIR allows (a bare date, a dateTime with or without zone); the
monitor, the alert writer and the CDS cards compare them, so they read them one way.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

__all__ = ["parse_when"]


def parse_when(text: Any) -> datetime | None:
    """A FHIR date or dateTime as an aware datetime (a date is midnight UTC, a dateTime
    without zone is taken as UTC); None when missing or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        if "T" not in text:
            return datetime.combine(date.fromisoformat(text[:10]), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
