"""Reading YAML/JSON input so that every error can name its file, line and path.

``load_document`` returns the parsed data plus a ``Positions`` map from a path inside the
document (``("items", 3, "scale")``) to its 1-based line. ``problems_from_validation`` turns a
pydantic ValidationError into our Problems with those lines filled in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from alliance_fhir.block_yaml import BlockReader
from alliance_fhir.exceptions import InvalidInputError, Problem

PathKey = tuple[int | str, ...]

#: Input files larger than this are refused before parsing (a defence, not a quota).
MAX_INPUT_BYTES = 50 * 1024 * 1024

#: Most nodes one YAML document may expand to (aliases count each time they are used): a
#: defence against alias bombs, far above any real record or plan file.
MAX_NODES = 1_000_000


@dataclass
class Positions:
    """Line numbers of the nodes of one parsed document."""

    source: str
    lines: dict[PathKey, int] = field(default_factory=dict)
    #: The same lines grouped by mapping (``block_yaml``'s documents only; else None).
    keyed: dict[PathKey, dict[str, int]] | None = None

    def key_lines(self, path: Sequence[int | str]) -> dict[str, int] | None:
        """The line of each key of the mapping at ``path`` (as ``lines`` has them), when
        the reader kept them grouped; None otherwise (look each up in ``lines``)."""
        return None if self.keyed is None else self.keyed.get(tuple(path))

    def line(self, path: Sequence[int | str]) -> int | None:
        """Line of ``path`` or of its nearest ancestor that has one."""
        key = tuple(path)
        while True:
            if key in self.lines:
                return self.lines[key]
            if not key:
                return None
            key = key[:-1]

    def problem(self, path: Sequence[int | str], field_name: str, reason: str) -> Problem:
        return Problem(
            self.source,
            field_name,
            reason,
            line=self.line(path),
            path=format_path(path) or None,
        )


def format_path(path: Sequence[int | str]) -> str:
    """``("items", 3, "scale")`` -> ``items[3].scale``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that keeps plain YAML 1.2-ish scalars: ``no``/``yes`` stay strings."""


# YAML 1.1 booleans (yes/no/on/off) surprise people writing answer labels; keep true/false only.
_LineLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _fast_loader_class() -> Any:
    """``_LineLoader`` with libyaml (PyYAML's C parser) doing the scanning and parsing: the
    same nodes and line marks, the same resolvers and constructors. None without libyaml."""
    if not getattr(yaml, "__with_libyaml__", False):
        return None
    try:
        # the stubs re-export yaml._yaml.CParser from yaml.cyaml; import it from its home
        from yaml._yaml import CParser
    except ImportError:  # a PyYAML that says it has libyaml but was built without it
        return None

    class _CLineLoader(CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        yaml_implicit_resolvers = _LineLoader.yaml_implicit_resolvers

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    return _CLineLoader


#: The libyaml loader, or None (then every document takes the pure-Python parser).
_FastLoader: Any = _fast_loader_class()


class _TooManyNodes(InvalidInputError):
    """An alias bomb: said at once by either parser (the slow one would only say it again)."""


def _walk(node: yaml.Node, path: PathKey, loader: _LineLoader, pos: Positions) -> Any:
    pos.lines[path] = node.start_mark.line + 1
    if len(pos.lines) > MAX_NODES:
        raise _TooManyNodes(
            Problem(pos.source, "", f"the document expands to more than {MAX_NODES} nodes")
        )
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _key(key_node, path, loader, pos)
            if key in out:
                raise InvalidInputError(
                    Problem(
                        pos.source,
                        str(key),
                        "duplicate key",
                        line=key_node.start_mark.line + 1,
                        path=format_path((*path, key)),
                    )
                )
            out[key] = _walk(value_node, (*path, key), loader, pos)
            pos.lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(child, (*path, i), loader, pos) for i, child in enumerate(node.value)]
    return _scalar(node, path, loader, pos, "not a valid value")


def _scalar(node: yaml.Node, path: PathKey, loader: _LineLoader, pos: Positions, what: str) -> Any:
    """Construct one scalar; a value YAML resolves but Python cannot hold (2024-02-30, an
    int of 5,000 digits) is a problem with its line, not a ValueError."""
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, OverflowError, TypeError) as exc:  # e.g. a timestamp like 2024-02-30
        raise InvalidInputError(
            Problem(
                pos.source,
                next((str(p) for p in reversed(path) if isinstance(p, str)), ""),
                f"{what}: {str(exc)[:200]}",
                line=node.start_mark.line + 1,
                path=format_path(path) or None,
            )
        ) from exc


def _key(key_node: yaml.Node, path: PathKey, loader: _LineLoader, pos: Positions) -> str:
    """A mapping key as text: only plain scalars are keys (``? [a, b]`` is refused), and a
    number, boolean, date or null key becomes its text."""
    if not isinstance(key_node, yaml.ScalarNode):
        raise InvalidInputError(
            Problem(
                pos.source,
                "",
                "a mapping key must be a plain value, not a list or mapping",
                line=key_node.start_mark.line + 1,
                path=format_path(path) or None,
            )
        )
    key = _scalar(key_node, path, loader, pos, "not a valid key")
    if isinstance(key, bytes):
        raise InvalidInputError(
            Problem(
                pos.source,
                "",
                "a mapping key must be text",
                line=key_node.start_mark.line + 1,
                path=format_path(path) or None,
            )
        )
    return key if isinstance(key, str) else str(key)


#: Plain block YAML (what exporters write) read a line at a time, no parser at all.
_BLOCK = BlockReader(_LineLoader.yaml_implicit_resolvers, MAX_NODES)


def parse_yaml(text: str, source: str) -> tuple[Any, Positions]:
    """Parse one YAML (or JSON, a YAML subset) document, keeping line numbers.

    Plain block YAML is read line by line (``block_yaml``, about ten times faster than
    libyaml); any other document is parsed by libyaml (about ten times faster than the
    pure-Python parser); any document libyaml refuses is parsed again by the pure-Python
    one, whose messages name the problem and line the way users know them. All three give
    the same data and lines (the property tests compare them).
    """
    block = _BLOCK.read(text)
    if block is not None:
        return block[0], Positions(source, block[1], block[1].keyed)
    if _FastLoader is not None and not _libyaml_differs(text):
        fast = _parse_fast(text, source)
        if fast is not None:
            return fast
    return _parse_slow(text, source)


#: Where libyaml and the pure-Python parser disagree (found by the property tests): a comment
#: right after a block scalar's indicator (``|#``), tabs, the Unicode line breaks (NEL, LS,
#: PS), a byte-order mark inside the text, a document marker after a CR, a %-escape in a
#: tag. Such documents take the slow parser, as before.
def _libyaml_differs(text: str) -> bool:
    """Whether ``text`` may hold something the two parsers read differently (see above)."""
    if _LIBYAML_DIFFERS.search(text) is not None:
        return True
    # '?' inside a plain scalar of a flow collection: libyaml keeps it, PyYAML refuses it
    if "?" not in text or not ("[" in text or "{" in text):
        return False
    return _question_near_flow(text)


def _question_near_flow(text: str) -> bool:
    """Whether a ``?`` may sit in a flow collection. Brackets are counted line by line,
    quoted strings left out; a ``?`` on a line with a bracket or while one is open, a comment
    or a stray quote there, or a count that goes below zero or ends open, all say yes. So a
    question in a form's item text (``Anything we could do differently?``) beside one-line
    flow mappings (``- {code: "1", value: 1}``) or a list wrapped over lines keeps libyaml."""
    depth = 0
    for line in text.splitlines():
        if depth == 0 and not any(c in line for c in "[]{}"):
            continue
        if "?" in line:
            return True
        bare = _QUOTED.sub("", line)
        if any(c in bare for c in "\"'#"):
            return True
        depth += bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}")
        if depth < 0:
            return True
    return depth != 0


_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\n]|\'\')*\'')


_LIBYAML_DIFFERS = re.compile(r"[|>][-+0-9]*#|[\t\x85\u2028\u2029\ufeff]|\r(?:\.\.\.|---)|!\S*%")


def _parse_fast(text: str, source: str) -> tuple[Any, Positions] | None:
    """The document and its lines through libyaml, or None when the slow parser must tell
    what is wrong (a syntax or character error: libyaml words its messages differently)."""
    pos = Positions(source)
    try:
        loader = _FastLoader(text)
    except yaml.YAMLError:
        return None
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        data = _walk_fast(root, (), loader, pos.lines, source)
        return None if data is None else (data, pos)  # an empty document: the slow one says
    except _TooManyNodes:
        raise
    except (_Slow, yaml.YAMLError, ValueError, OverflowError, TypeError, RecursionError):
        return None  # a duplicate key, a bad scalar...: said, exactly, by the slow parser
    finally:
        loader.dispose()


class _Slow(Exception):
    """The fast walk met something only the slow one words right (a duplicate key...)."""


_STANDARD = "tag:yaml.org,2002:"
_STR = _STANDARD + "str"


def _walk_fast(
    node: yaml.Node, path: PathKey, loader: Any, lines: dict[PathKey, int], source: str
) -> Any:
    """:func:`_walk` for documents that are fine, lean: anything odd raises for the slow walk."""
    lines[path] = node.start_mark.line + 1
    if len(lines) > MAX_NODES:
        raise _TooManyNodes(
            Problem(source, "", f"the document expands to more than {MAX_NODES} nodes")
        )
    if not node.tag.startswith(_STANDARD):
        raise _Slow  # a local tag: refused, in the slow parser's words
    kind = type(node)
    if kind is yaml.MappingNode:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if type(key_node) is not yaml.ScalarNode:
                raise _Slow
            if key_node.tag == _STR:
                key = key_node.value
            else:
                constructed = loader.construct_object(key_node, deep=True)
                if isinstance(constructed, bytes):
                    raise _Slow
                key = constructed if isinstance(constructed, str) else str(constructed)
            if key in out:
                raise _Slow
            sub = (*path, key)
            out[key] = _walk_fast(value_node, sub, loader, lines, source)
            lines[sub] = key_node.start_mark.line + 1
        return out
    if kind is yaml.SequenceNode:
        return [
            _walk_fast(child, (*path, i), loader, lines, source)
            for i, child in enumerate(node.value)
        ]
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
        if not node.value and not node.style:
            raise _Slow  # a plain empty scalar tagged ``!``: libyaml says "", PyYAML None
        return node.value
    return loader.construct_object(node, deep=True)


def _parse_slow(text: str, source: str) -> tuple[Any, Positions]:
    pos = Positions(source)
    try:
        loader = _LineLoader(text)  # the reader checks the first chunk's characters here
    except yaml.reader.ReaderError as exc:
        raise _reader_problem(exc, text, source) from exc
    try:
        root = loader.get_single_node()
        if root is None:
            raise InvalidInputError(Problem(source, "", "the document is empty", line=1))
        return _walk(root, (), loader, pos), pos
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = f"not valid YAML/JSON: {exc.problem or exc.context}"
        raise InvalidInputError(Problem(source, "", reason, line=line)) from exc
    except yaml.reader.ReaderError as exc:
        raise _reader_problem(exc, text, source) from exc
    except yaml.YAMLError as exc:
        raise InvalidInputError(Problem(source, "", f"not valid YAML/JSON: {exc}")) from exc
    except RecursionError as exc:
        raise InvalidInputError(Problem(source, "", "the document is nested too deeply")) from exc
    finally:
        loader.dispose()


def _reader_problem(exc: yaml.reader.ReaderError, text: str, source: str) -> InvalidInputError:
    """A character YAML does not accept (a control character): name its line."""
    line = text[: exc.position].count("\n") + 1
    char = exc.character if isinstance(exc.character, int) else ord(exc.character)
    reason = f"not valid YAML/JSON: character {char:#06x} is not allowed"
    return InvalidInputError(Problem(source, "", reason, line=line))


def read_text(path: Path) -> str:
    """Read an input file as UTF-8 (BOM tolerated), refusing huge or undecodable files."""
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise InvalidInputError(
                Problem(source, "", f"file is {size} bytes, over the {MAX_INPUT_BYTES} limit")
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(Problem(source, "", f"cannot read: {exc.strerror}")) from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInputError(
            Problem(source, "", f"not UTF-8 text (byte {exc.start})", line=line)
        ) from exc


def load_document(path: Path) -> tuple[Any, Positions]:
    """Read and parse a YAML or JSON file with positions."""
    text = read_text(path)
    if path.suffix.lower() == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                Problem(str(path), "", f"not valid JSON: {exc.msg}", line=exc.lineno)
            ) from exc
        except ValueError as exc:  # an integer too long to convert, for one
            raise InvalidInputError(
                Problem(str(path), "", f"not valid JSON: {str(exc)[:200]}")
            ) from exc
        except RecursionError as exc:
            raise InvalidInputError(
                Problem(str(path), "", "not valid JSON: nested too deeply")
            ) from exc
    return parse_yaml(text, str(path))


def problems_from_validation(
    exc: ValidationError, pos: Positions, prefix: Sequence[int | str] = ()
) -> list[Problem]:
    """Translate pydantic errors (the one place we do) into Problems with lines and paths."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *(p for p in err["loc"] if not _is_union_tag(p)))
        fld = next((str(p) for p in reversed(loc) if isinstance(p, str)), "")
        problems.append(pos.problem(loc, fld, _reason(err)))
    return problems


def _is_union_tag(part: int | str) -> bool:
    # pydantic inserts the tag of a union member ("function-after[...]") into loc; not a path.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _reason(err: Any) -> str:
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")
