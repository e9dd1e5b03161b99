"""SMART scopes compared: what an authorization server granted against what we asked for.

A server may grant less than asked (a narrower registration, a policy) and still answer
200, and then every write fails with 403 in the middle of a sync. ``doctor`` asks for a
token and compares, using these pure functions. Scopes are SMART v2
(``system/Observation.cruds``, letters in that order, ``?query`` ignored) or v1
(``read`` = rs, ``write`` = cud, ``*`` = cruds); a granted ``*`` type covers every type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["SmartScope", "missing_scopes", "parse_scopes", "uncovered_needs"]

_LETTERS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True)
class SmartScope:
    """One resource scope: ``context/type.permissions`` (permissions as v2 letters)."""

    context: str
    resource_type: str
    permissions: str

    def __str__(self) -> str:
        return f"{self.context}/{self.resource_type}.{self.permissions}"


def parse_scopes(text: str) -> list[SmartScope]:
    """The resource scopes in a space-separated scope string (openid, launch, ... skipped)."""
    scopes = []
    for token in text.split():
        context, slash, rest = token.partition("/")
        resource_type, dot, permissions = rest.rpartition(".")
        if not slash or not dot or not context or not resource_type:
            continue
        permissions = permissions.split("?", 1)[0]
        permissions = _V1.get(permissions, permissions)
        letters = "".join(c for c in _LETTERS if c in permissions)
        if letters:
            scopes.append(SmartScope(context, resource_type, letters))
    return scopes


def _covered(want: SmartScope, granted: Iterable[SmartScope]) -> str:
    """The letters of ``want`` that ``granted`` gives (same context, same or ``*`` type)."""
    given: set[str] = set()
    for scope in granted:
        if scope.context == want.context and scope.resource_type in ("*", want.resource_type):
            given.update(scope.permissions)
    return "".join(c for c in want.permissions if c in given)


def missing_scopes(requested: str, granted: str) -> list[str]:
    """Each requested scope the grant does not cover, narrowed to the letters missing."""
    have = parse_scopes(granted)
    missing = []
    for want in parse_scopes(requested):
        covered = _covered(want, have)
        lacking = "".join(c for c in want.permissions if c not in covered)
        if lacking:
            missing.append(str(SmartScope(want.context, want.resource_type, lacking)))
    return missing


def uncovered_needs(needs: dict[str, str], granted: str, *, context: str = "system") -> list[str]:
    """Of ``{resource type: letters}`` a job needs, the scope the grant lacks: one typed scope
    when one type lacks something, else one ``context/*.letters`` that would cover all."""
    have = parse_scopes(granted)
    lacking: dict[str, str] = {}
    for resource_type, letters in needs.items():
        covered = _covered(SmartScope(context, resource_type, letters), have)
        missing = "".join(c for c in letters if c not in covered)
        if missing:
            lacking[resource_type] = missing
    if len(lacking) > 1:
        letters = "".join(c for c in _LETTERS if any(c in v for v in lacking.values()))
        return [str(SmartScope(context, "*", letters))]
    return [str(SmartScope(context, t, letters)) for t, letters in lacking.items()]
