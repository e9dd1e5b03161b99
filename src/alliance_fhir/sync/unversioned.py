"""Updates on a server that keeps no versions (no ETag, no ``meta.versionId``, If-Match
ignored): read, compare with what we last wrote, then write (issue #13 item 4).

If-Match cannot protect such an update, so the engine first reads the server's current
resource. The state store keeps the content hash of the record as we built it, with
references still placeholders (``Desired``), so the server's copy is turned back into that
form (``as_built``) before the hashes are compared:

* the server holds what we last wrote -> ``write``;
* the server already holds our new content (our write landed, its answer was lost) ->
  ``unchanged``, nothing is sent;
* anything else: someone else changed it -> ``conflict``, never an overwrite.

The guarantee is weaker than If-Match: a change that lands between our read and our write
is still overwritten. Records others edit (``merge`` records) take the three-way merge path
instead, which reads the server's version too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

from alliance_fhir.adapters.fhirjson import content_hash
from alliance_fhir.fhir import ReadResult

__all__ = ["Verdict", "as_built", "unversioned_verdict"]

Verdict = Literal["write", "unchanged", "conflict"]


def _key(node: Mapping[str, Any]) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"), default=str)


def _resolved_refs(built: Any, resolved: Any, out: dict[str, Any]) -> None:
    """Map each reference as resolved (``Patient/1``) to its placeholder as built, walking
    both copies of one resource in step (they differ only in references)."""
    if isinstance(built, dict) and isinstance(resolved, dict):
        if built.get("reference") != resolved.get("reference"):
            out[_key(resolved)] = built
            return
        for name, value in built.items():
            if name in resolved:
                _resolved_refs(value, resolved[name], out)
    elif isinstance(built, list) and isinstance(resolved, list) and len(built) == len(resolved):
        for one, other in zip(built, resolved, strict=True):
            _resolved_refs(one, other, out)


def _unresolve(node: Any, refs: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        placeholder = refs.get(_key(node))
        if placeholder is not None:
            return copy.deepcopy(placeholder)
        return {k: _unresolve(v, refs) for k, v in node.items()}
    if isinstance(node, list):
        return [_unresolve(v, refs) for v in node]
    return node


def as_built(
    current: Mapping[str, Any], built: Mapping[str, Any], resolved: Mapping[str, Any]
) -> dict[str, Any]:
    """The server's ``current`` copy with the references we resolve (``resolved`` is
    ``built`` with its placeholders resolved) turned back into their placeholders: the
    form whose content hash the state store keeps."""
    refs: dict[str, Any] = {}
    _resolved_refs(dict(built), dict(resolved), refs)
    return dict(_unresolve(dict(current), refs))


def unversioned_verdict(
    read: Callable[[str, str], ReadResult],
    server_id: str,
    built: Mapping[str, Any],
    resolved: Mapping[str, Any],
    last_hash: str | None,
) -> Verdict:
    """Whether an update of an unversioned resource may be sent (see the module docstring).
    Without a stored hash (state from a lookup) there is nothing to compare: ``write``."""
    current = read(str(resolved["resourceType"]), server_id).resource
    if content_hash(current) == content_hash(dict(resolved)):
        return "unchanged"
    if last_hash is None or content_hash(as_built(current, built, resolved)) == last_hash:
        return "write"
    return "conflict"
