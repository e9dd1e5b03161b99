"""A reader of plain block YAML, line by line, for the record files tools write.

Why: libyaml builds a Python node per scalar and calls the Python resolver for each, which
caps reading YAML near 4,000 records a second. Files that exporters and our generator write
are simple: block mappings and sequences, one ``key: value`` a line, plain or quoted
one-line scalars. :func:`read_block_yaml` reads exactly that subset, a line at a time, and
gives the same data and the same line of every node as the line-tracking parser
(``alliance_fhir.inputs``). Anything else - flow collections, anchors, tags, block or
multi-line scalars, escapes, duplicate keys, a bad indent, a
timestamp that is no date - returns None, and the caller parses the document the long way
(which also says what is wrong, and where). Scalars are resolved and constructed by the
same resolver table and PyYAML constructors as the long way, so they cannot differ.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

PathKey = tuple[int | str, ...]


class Lines(dict[PathKey, int]):
    """The line of each node's path; ``keyed`` has the same lines of each mapping's keys,
    grouped by the mapping's path (a record's answers' lines without a look-up each)."""

    def __init__(self) -> None:
        super().__init__()
        self.keyed: dict[PathKey, dict[str, int]] = {}


Resolvers = Mapping[str | None, Sequence[tuple[str, re.Pattern[str]]]]

_STANDARD = "tag:yaml.org,2002:"
_STR = _STANDARD + "str"
#: The tags a plain scalar of the subset may resolve to (merge ``<<`` and value ``=`` may not).
_SCALAR_TAGS = frozenset(
    _STANDARD + t for t in ("str", "int", "float", "bool", "null", "timestamp")
)

#: Characters YAML accepts in a document, less tab, CR, NEL, the BOM and the Unicode line
#: breaks: where PyYAML and this reader could differ, the long way decides.
_OUTSIDE = re.compile(
    "[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
#: The ASCII characters :data:`_OUTSIDE` lets through: line feed and the printable ones.
_ASCII_INSIDE = bytes([0x0A, *range(0x20, 0x7F)])


def _plain_ascii(text: str) -> bool:
    """Whether ``text`` is ASCII with no character outside the subset (a table deletion in
    C: a regex scan of every character costs ten times as much)."""
    return text.isascii() and not text.encode("ascii").translate(None, _ASCII_INSIDE)


#: ``key:`` or ``key: value`` (the line already without its indent and trailing spaces).
_KEY_LINE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.\-]*):(?: +(.*))?\Z")
#: The same with the value told apart: single-quoted, double-quoted (no escapes) or other.
_KEY_VALUE = re.compile(
    r"([A-Za-z0-9_][A-Za-z0-9_.\-]*):"
    r"(?: +(?:'((?:[^']|'')*)'(?: +#.*)?|\"([^\"\\]*)\"(?: +#.*)?|(.*)))?\Z"
)
#: A quoted key (no escapes): text as it stands, never a number or a date.
_QUOTED_KEY = re.compile(r"(?:'((?:[^']|'')*)'|\"([^\"\\]*)\"):(?: +(.*))?\Z")
_SINGLE = re.compile(r"'((?:[^']|'')*)'(?: +#.*)?\Z")
_DOUBLE = re.compile(r'"([^"\\]*)"(?: +#.*)?\Z')
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
#: Longest key text read here (PyYAML refuses an implicit key past 1024 characters).
_MAX_KEY = 1000
#: Deepest nesting read here (records nest 3 deep; the long way recurses per level).
_MAX_DEPTH = 64
#: Most plain scalars kept resolved (they repeat: keys, codes, systems).
_CACHE_SIZE = 4096
#: Most mapping lines kept read (a line repeats across records: its key and value), and the
#: longest kept (repeated lines are short; a long one would only hold memory).
_LINE_CACHE_SIZE = 16384
_LINE_CACHE_WIDTH = 120

#: A mapping line read: its key, whether its value is on the line, that value.
_Entry = tuple[str, bool, Any]


class _Out(Exception):
    """The document leaves the subset: the long way reads it."""


class BlockReader:
    """Reads the subset with one resolver table (``_LineLoader``'s: YAML 1.1 less yes/no)."""

    def __init__(self, resolvers: Resolvers, max_nodes: int) -> None:
        self._resolvers = resolvers
        self._max_nodes = max_nodes
        self._constructor = yaml.constructor.SafeConstructor()
        self._plain_cache: dict[str, tuple[bool, Any]] = {}
        #: Keys seen resolving to text (files use a few dozen): no resolver call for them.
        self._keys: set[str] = set()
        #: Mapping lines read before, as :meth:`_entry` read them: records repeat most of
        #: their lines (``instrument: x``, ``heard: '3'``), so most lines are one dict lookup.
        self._entries: dict[str, _Entry] = {}

    def read(self, text: str) -> tuple[Any, Lines] | None:
        """The document and the line of each node's path, or None outside the subset."""
        if not _plain_ascii(text) and _OUTSIDE.search(text) is not None:
            return None
        rows: list[tuple[int, int, str]] = []
        for number, raw in enumerate(text.split("\n"), 1):
            line = raw.rstrip(" ")
            if not line:
                continue
            content = line.lstrip(" ")
            if content[0] != "#":
                rows.append((number, len(line) - len(content), content))
        if rows and rows[0][1:] == (0, "---"):
            del rows[0]
        if not rows:
            return None
        walk = _Walk(rows, self._scalar, self._entries, self._entry)
        try:
            data = walk.block(())
        except (_Out, RecursionError):
            return None
        if walk.i != len(rows) or len(walk.lines) > self._max_nodes:
            return None
        return data, walk.lines

    def _entry(self, content: str) -> _Entry:
        """One ``key: value`` (or ``key:``) line of a mapping, without its indent: the key,
        whether the value is on the line, and the value; kept for the next time."""
        m = _KEY_VALUE.match(content)
        if m is not None:
            key, single, double, other = m.groups()
            quoted = False
            colon = m.end(1)
        else:
            q = _QUOTED_KEY.match(content)
            if q is None:
                raise _Out
            in_single, in_double, other = q.groups()
            key = in_single.replace("''", "'") if in_double is None else in_double
            single = double = None
            quoted = True
            colon = q.end(1 if in_double is None else 2) + 1
        if colon > _MAX_KEY:
            raise _Out  # PyYAML takes no key longer than 1024 characters
        if not quoted and key not in self._keys:
            if type(self._plain(key)) is not str:
                raise _Out  # a key PyYAML reads as a number, date, null...
            if len(self._keys) >= _CACHE_SIZE:
                self._keys.clear()
            self._keys.add(key)
        entry: _Entry
        if single is not None:
            entry = (key, True, single.replace("''", "'") if "'" in single else single)
        elif double is not None:
            entry = (key, True, double)
        elif other is not None:
            entry = (key, True, self._scalar(other))
        else:
            entry = (key, False, None)
        if len(content) <= _LINE_CACHE_WIDTH:
            if len(self._entries) >= _LINE_CACHE_SIZE:
                self._entries.clear()
            self._entries[content] = entry
        return entry

    def _scalar(self, text: str) -> Any:
        """A one-line value: quoted (no escapes) or plain."""
        first = text[0]
        if first == "'":
            m = _SINGLE.match(text)
            if m is None:
                raise _Out
            return m.group(1).replace("''", "'")
        if first == '"':
            m = _DOUBLE.match(text)
            if m is None:
                raise _Out
            return m.group(1)
        if first in _INDICATORS and not (first == "-" and text[1:2] in tuple("0123456789.")):
            raise _Out
        if " #" in text:  # a comment ends the value
            text = text[: text.index(" #")].rstrip(" ")
        if ": " in text or text.endswith(":"):
            raise _Out
        return self._plain(text)

    def _plain(self, text: str) -> Any:
        """A plain scalar resolved and constructed as PyYAML would (cached: values repeat)."""
        hit = self._plain_cache.get(text)
        if hit is None:
            hit = self._resolve(text)
            if len(self._plain_cache) >= _CACHE_SIZE:
                self._plain_cache.clear()
            self._plain_cache[text] = hit
        ok, value = hit
        if not ok:
            raise _Out
        return value

    def _resolve(self, text: str) -> tuple[bool, Any]:
        tag = _STR
        for candidate, pattern in [
            *self._resolvers.get(text[0] if text else "", ()),
            *self._resolvers.get(None, ()),
        ]:
            if pattern.match(text):
                tag = candidate
                break
        if tag not in _SCALAR_TAGS:
            return False, None
        if tag == _STR:
            return True, text
        construct: Callable[[Any, yaml.Node], Any] = self._constructor.yaml_constructors[tag]
        try:
            return True, construct(self._constructor, yaml.ScalarNode(tag, text))
        except (ValueError, OverflowError, TypeError):
            return False, None  # e.g. 2024-02-30: the long way says so, with its line


class _Walk:
    """One document's rows (line number, indent, content) walked into data and lines."""

    def __init__(
        self,
        rows: list[tuple[int, int, str]],
        scalar: Callable[[str], Any],
        entries: dict[str, _Entry],
        entry: Callable[[str], _Entry],
    ) -> None:
        self.rows = rows
        self.i = 0
        self.lines = Lines()
        self._scalar = scalar
        self._entries = entries
        self._entry = entry

    def block(self, path: PathKey) -> Any:
        """The block whose first row is ``rows[i]`` (its indent is the block's)."""
        if len(path) > _MAX_DEPTH:
            raise _Out  # deep documents: where the long way runs out of stack, it says so
        _, indent, content = self.rows[self.i]
        if content == "-" or content.startswith("- "):
            return self._sequence(path, indent)
        return self._mapping(path, indent)

    def _sequence(self, path: PathKey, indent: int) -> list[Any]:
        rows = self.rows
        self.lines[path] = rows[self.i][0]
        out: list[Any] = []
        while self.i < len(rows):
            number, at, content = rows[self.i]
            if at != indent or not (content == "-" or content.startswith("- ")):
                break
            rest = content[1:]
            value = rest.lstrip(" ")
            sub = (*path, len(out))
            if not value:  # the entry's block starts below; or it is null (line of the "-")
                self.i += 1
                if self.i < len(rows) and rows[self.i][1] > indent:
                    out.append(self.block(sub))
                else:
                    out.append(None)
                    self.lines[sub] = number
            elif (
                value == "-"
                or value.startswith("- ")
                or _KEY_LINE.match(value)
                or _QUOTED_KEY.match(value)
            ):
                # a compact block on the entry's own line: it starts at the value's column
                rows[self.i] = (number, at + 1 + len(rest) - len(value), value)
                out.append(self.block(sub))
            else:
                out.append(self._scalar(value))
                self.lines[sub] = number
                self.i += 1
            if self.i < len(rows) and rows[self.i][1] > indent:
                raise _Out
        return out

    def _mapping(self, path: PathKey, indent: int) -> dict[str, Any]:
        rows = self.rows
        end = len(rows)
        lines = self.lines
        entries = self._entries
        i = self.i
        lines[path] = rows[i][0]
        out: dict[str, Any] = {}
        keyed: dict[str, int] = {}
        lines.keyed[path] = keyed
        while i < end:
            number, at, content = rows[i]
            if at != indent:
                if at > indent:
                    raise _Out
                break
            entry = entries.get(content)
            if entry is None:
                entry = self._entry(content)
            key, has_value, value = entry
            if key in out:
                raise _Out  # a duplicate: the long way says where
            i += 1
            if has_value:
                out[key] = value
            elif i < end and (
                rows[i][1] > indent
                or (rows[i][1] == indent and (rows[i][2] == "-" or rows[i][2].startswith("- ")))
            ):
                self.i = i
                out[key] = self.block((*path, key))
                i = self.i
            else:
                out[key] = None
            lines[(*path, key)] = number
            keyed[key] = number
            if i < end and rows[i][1] > indent:
                raise _Out
        self.i = i
        return out
