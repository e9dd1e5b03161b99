"""Helpers for the monitoring tests: instruments, hand-built series, a PNG decoder."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from alliance_fhir.inputs import parse_yaml
from alliance_fhir.instruments.library import load_library
from alliance_fhir.instruments.schema import Instrument
from alliance_fhir.monitoring.evaluate import CheckIn, checkin_from_answers
from alliance_fhir.monitoring.rules import Rule, load_rules, rules_from_data

START = datetime(2024, 1, 8, 10, 0, tzinfo=UTC)


@cache
def instruments() -> dict[str, Instrument]:
    return {i.id: i for i in load_library()}


def instrument(instrument_id: str) -> Instrument:
    return instruments()[instrument_id]


@cache
def default_rules() -> tuple[Rule, ...]:
    return tuple(load_rules(instruments().values()))


def rules_for(instrument_id: str) -> list[Rule]:
    return [r for r in default_rules() if r.instrument == instrument_id]


def rules_yaml(text: str, *, check: bool = True) -> list[Rule]:
    data, pos = parse_yaml(text, "rules.yaml")
    return rules_from_data(data, pos, instruments().values() if check else None)


def when(week: int) -> datetime:
    return START + timedelta(weeks=week)


def totals(values: Sequence[float | None], *, prefix: str = "a") -> list[CheckIn]:
    """Weekly check-ins with the given totals; ``None`` makes an unscorable check-in."""
    return [
        CheckIn(f"{prefix}{i + 1}", when(i), v)
        if v is not None
        else CheckIn(f"{prefix}{i + 1}", when(i), None, scorable=False, reason="2 of 4 unanswered")
        for i, v in enumerate(values)
    ]


def trc(key: str, week: int, value: str = "5", **overrides: str | None) -> CheckIn:
    """A trc-client check-in with every item answered ``value`` except ``overrides``
    (linkIds with ``_`` for ``-``; ``None`` leaves the item unanswered)."""
    answers: dict[str, str | float | int] = {}
    rated = [i.link_id for i in instrument("trc-client").items if i.type == "choice"]
    for link_id in rated:
        given = overrides.get(link_id.replace("-", "_"), value)
        if given is not None:
            answers[link_id] = given
    return checkin_from_answers(instrument("trc-client"), key, when(week), answers)


def falling_srs() -> list[CheckIn]:
    """A client whose session ratings start fine and fall below the cutoff."""
    return totals([38.5, 38.9, 37.8, 36.4, None, 33.1, 31.2], prefix="srs")


def falling_trc() -> list[CheckIn]:
    return [
        trc("trc1", 0, "5"),
        trc("trc2", 1, "5", pace="4"),
        trc("trc3", 2, "4", trust="5"),
        trc("trc4", 3, "4", heard="3", speak_up="3"),
        trc("trc5", 4, "3", heard="2", held_back="4"),
        trc("trc6", 5, "3", heard="1", safe="2", held_back="5"),
    ]


# -- PNG (stdlib only) -------------------------------------------------------------------


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG: (width, height, RGB rows)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = depth = colour = interlace = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    assert depth == 8, f"bit depth {depth}"
    assert colour in (2, 6), f"colour type {colour}"
    assert interlace == 0
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    i = 0
    for _ in range(height):
        ftype = raw[i]
        line = bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 0xFF
            elif ftype == 2:
                line[x] = (line[x] + b) & 0xFF
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 0xFF
        rows.append(
            bytes(line) if bpp == 3 else bytes(line[j] for j in range(stride) if j % 4 != 3)
        )
        prev = line
    return width, height, rows


def pixels_near(
    rows: list[bytes], width: int, rgb: tuple[int, int, int], tolerance: int = 20
) -> list[tuple[int, int]]:
    """(x, y) of every pixel within ``tolerance`` of ``rgb`` in each channel."""
    r0, g0, b0 = rgb
    out = []
    for y, row in enumerate(rows):
        for x in range(width):
            r, g, b = row[3 * x], row[3 * x + 1], row[3 * x + 2]
            if abs(r - r0) <= tolerance and abs(g - g0) <= tolerance and abs(b - b0) <= tolerance:
                out.append((x, y))
    return out
