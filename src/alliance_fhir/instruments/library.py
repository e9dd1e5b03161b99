"""The set of instruments in use: the bundled ones, plus or replaced by a clinic's own.

``load_library`` reads ``mappings/instruments/*`` shipped with the package, then each extra
directory's ``instruments/`` folder (or the directory itself when it directly holds definition
files). A later definition with the same id replaces the earlier one, so a clinic adds or
overrides instruments without forking.

``validate_paths`` checks files and directories of mappings without loading them for use. It
dispatches on the content of each file through a table of *kinds* given by the caller
(``INSTRUMENT_KINDS`` here: instrument, overlay; the application layer adds goal plans and
rules), validating kinds in table order so that overlays are checked against the instruments
found in the same run. The table is an argument, not a registry filled at import time, so what
a validation accepts never depends on which modules happen to be imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alliance_fhir.exceptions import (
    ConfigError,
    InvalidInputError,
    Problem,
    UnknownInstrumentError,
)
from alliance_fhir.inputs import Positions, load_document
from alliance_fhir.instruments.loader import instrument_from_data
from alliance_fhir.instruments.overlay import check_overlay, overlay_from_data
from alliance_fhir.instruments.schema import Instrument
from alliance_fhir.resources import bundled_mappings

__all__ = [
    "DEFINITION_SUFFIXES",
    "INSTRUMENT_KINDS",
    "SKIPPED_DIRS",
    "FileKind",
    "InstrumentLibrary",
    "UnknownInstrumentError",
    "ValidationContext",
    "is_instrument",
    "is_overlay",
    "load_library",
    "validate_paths",
]

#: File suffixes read as mappings.
DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")

#: Directories whose files no registered kind claims yet; skipped quietly when walking.
SKIPPED_DIRS = {"sources"}


class InstrumentLibrary:
    """Instruments by id, each with the file it came from."""

    def __init__(self, instruments: Mapping[str, tuple[Instrument, Path | None]] = {}) -> None:
        self._entries = dict(instruments)

    def get(self, instrument_id: str) -> Instrument:
        """The instrument with ``instrument_id``; ``UnknownInstrumentError`` if none."""
        try:
            return self._entries[instrument_id][0]
        except KeyError:
            known = ", ".join(self.ids()) or "none"
            raise UnknownInstrumentError(
                f"unknown instrument {instrument_id!r}; known instruments: {known}"
            ) from None

    def source(self, instrument_id: str) -> Path | None:
        """The file the instrument was loaded from (``None`` if built in memory)."""
        self.get(instrument_id)
        return self._entries[instrument_id][1]

    def ids(self) -> list[str]:
        return sorted(self._entries)

    def all(self) -> list[Instrument]:
        """Every instrument, sorted by id."""
        return [self._entries[i][0] for i in self.ids()]

    def with_instrument(
        self, instrument: Instrument, source: Path | None = None
    ) -> InstrumentLibrary:
        """A copy with ``instrument`` added, replacing any with the same id."""
        entries = dict(self._entries)
        entries[instrument.id] = (instrument, source)
        return InstrumentLibrary(entries)

    def __contains__(self, instrument_id: object) -> bool:
        return instrument_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self.all())


# -- loading -----------------------------------------------------------------------------


def load_library(extra_dirs: Sequence[Path] = ()) -> InstrumentLibrary:
    """Bundled instruments, then each extra directory's, later ids overriding earlier ones.

    Raises ``InvalidInputError`` with every problem found (all files are read first), and
    ``ConfigError`` for an extra directory that does not exist.
    """
    problems: list[Problem] = []
    entries: dict[str, tuple[Instrument, Path | None]] = {}
    layers: list[tuple[list[Path], bool]] = [(_files(bundled_mappings() / "instruments"), True)]
    for extra in extra_dirs:
        if not extra.is_dir():
            raise ConfigError(f"instrument directory {extra} does not exist")
        sub = extra / "instruments"
        if sub.is_dir():
            layers.append((_files(sub), True))
        else:
            layers.append((_files(extra), False))
    for files, all_instruments in layers:
        layer: dict[str, Path] = {}
        for path in files:
            try:
                data, pos = load_document(path)
                if not all_instruments and not is_instrument(data):
                    continue  # a clinic directory may hold overlays or rules beside them
                instrument = instrument_from_data(data, pos)
            except InvalidInputError as exc:
                problems.extend(exc.problems)
                continue
            if instrument.id in layer:
                reason = f"instrument {instrument.id!r} is also defined in {layer[instrument.id]}"
                problems.append(pos.problem(("id",), "id", reason))
                continue
            layer[instrument.id] = path
            entries[instrument.id] = (instrument, path)
    if problems:
        raise InvalidInputError(problems)
    return InstrumentLibrary(entries)


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in DEFINITION_SUFFIXES
    )


# -- validation: a dispatch table of kinds -----------------------------------------------


@dataclass
class ValidationContext:
    """What validators share in one ``validate_paths`` run.

    ``library`` holds the bundled instruments plus every valid instrument seen so far in the
    run (later kinds, such as overlays, are checked against it).
    """

    library: InstrumentLibrary


Predicate = Callable[[Any], bool]
Validator = Callable[[Path, Any, Positions, ValidationContext], list[Problem]]


@dataclass(frozen=True)
class FileKind:
    """A kind of mapping file ``validate_paths`` recognises.

    ``predicate(data)`` says whether parsed data is of this kind (the first match wins);
    ``validator(path, data, positions, context)`` returns its problems; ``hint`` tells a user
    what makes a file of this kind when none matches.
    """

    name: str
    predicate: Predicate
    validator: Validator
    hint: str


def is_instrument(data: Any) -> bool:
    return isinstance(data, dict) and "items" in data and "scoring" in data


def is_overlay(data: Any) -> bool:
    return isinstance(data, dict) and "licence_holder" in data


def _validate_instrument(
    path: Path, data: Any, pos: Positions, context: ValidationContext
) -> list[Problem]:
    try:
        instrument = instrument_from_data(data, pos)
    except InvalidInputError as exc:
        return exc.problems
    context.library = context.library.with_instrument(instrument, path)
    return []


def _validate_overlay(
    path: Path, data: Any, pos: Positions, context: ValidationContext
) -> list[Problem]:
    try:
        overlay = overlay_from_data(data, pos)
    except InvalidInputError as exc:
        return exc.problems
    if overlay.instrument not in context.library:
        known = ", ".join(context.library.ids()) or "none"
        reason = f"unknown instrument {overlay.instrument!r}; known instruments: {known}"
        return [pos.problem(("instrument",), "instrument", reason)]
    return check_overlay(overlay, context.library.get(overlay.instrument), pos)


#: The kinds this package knows: instruments first, so overlays see the run's instruments.
INSTRUMENT_KINDS: tuple[FileKind, ...] = (
    FileKind(
        "instrument", is_instrument, _validate_instrument, "an instrument has 'items' and 'scoring'"
    ),
    FileKind("overlay", is_overlay, _validate_overlay, "an overlay has 'licence_holder'"),
)


def validate_paths(
    paths: Iterable[Path],
    library: InstrumentLibrary | None = None,
    kinds: Sequence[FileKind] = INSTRUMENT_KINDS,
) -> list[Problem]:
    """Every problem in the given mapping files and directories (walked recursively).

    Instruments found in a run may override bundled ones (as in ``load_library``); two files
    in the run defining the same instrument id is a problem. Overlays are checked against
    ``library`` (default: the bundled instruments) plus the run's instruments. ``kinds`` is
    the table of file kinds to recognise, validated in its order.
    """
    problems: list[Problem] = []
    parsed: list[tuple[Path, Any, Positions, FileKind]] = []
    for path, walked in _candidates(paths, problems):
        try:
            data, pos = load_document(path)
        except InvalidInputError as exc:
            problems.extend(exc.problems)
            continue
        kind = next((k for k in kinds if k.predicate(data)), None)
        if kind is None:
            if walked and SKIPPED_DIRS.intersection(path.parent.parts):
                continue
            reason = "not a recognised mapping file (" + ", ".join(k.hint for k in kinds) + ")"
            problems.append(pos.problem((), "", reason))
            continue
        parsed.append((path, data, pos, kind))

    if library is None:
        library = load_library()
    context = ValidationContext(library)
    seen: dict[str, Path] = {}
    for kind in kinds:
        for path, data, pos, file_kind in parsed:
            if file_kind is not kind:
                continue
            problems.extend(kind.validator(path, data, pos, context))
            if kind.name == "instrument" and isinstance(data, dict):
                ident = str(data.get("id"))
                if ident in seen and ident in context.library:
                    reason = f"instrument {ident!r} is also defined in {seen[ident]}"
                    problems.append(pos.problem(("id",), "id", reason))
                seen.setdefault(ident, path)
    return problems


def _candidates(paths: Iterable[Path], problems: list[Problem]) -> list[tuple[Path, bool]]:
    out: list[tuple[Path, bool]] = []
    for path in paths:
        if path.is_dir():
            out.extend(
                (p, True)
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in DEFINITION_SUFFIXES
            )
        elif path.is_file():
            out.append((path, False))
        else:
            problems.append(Problem(str(path), "", "no such file or directory"))
    return out
