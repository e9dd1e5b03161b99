"""Our identifiers: every resource we write carries one, so writes are conditional and a
second run never duplicates."""

from __future__ import annotations

from typing import Any

from alliance_fhir.defaults import DEFAULT_CANONICAL_BASE, DEFAULT_NAMESPACE

__all__ = [
    "DEFAULT_CANONICAL_BASE",
    "DEFAULT_NAMESPACE",
    "identifier_system",
    "our_identifier",
    "search_token",
]


def identifier_system(kind: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The identifier system for one kind of record, e.g. ``.../assessment``."""
    return f"{namespace.rstrip('/')}/{kind}"


def our_identifier(kind: str, key: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """A FHIR Identifier in our namespace (use ``official``: we own its meaning)."""
    return {"use": "official", "system": identifier_system(kind, namespace), "value": key}


def search_token(kind: str, key: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """``system|value`` for ``?identifier=`` searches and conditional writes."""
    return f"{identifier_system(kind, namespace)}|{key}"
