"""The run-wide table of assessment keys already seen, in about 20 bytes a key.

The cross-file duplicate check needs every key of the run, and a streamed import of a
million records keeps nothing else for the whole run, so this table *is* the import's memory
growth. A ``dict`` of key text to location costs ~150 bytes a key (the string, the slot, the
int); here each key costs:

* an 8-byte keyed blake2b digest in a dense ``array`` (insertion order);
* a 4-byte slot in an open-addressing index over those digests (1.5-3 slots a key);
* the key and its line as text, zlib-compressed a chunk of 1,024 keys at a time (a few bytes
  a key for ids that share a shape), read back only when a digest matches.

**Why a digest match is only a hint.** Two different keys share a 64-bit digest with
probability 2^-64 per pair: ~n^2/2^65 over a run, 2.7e-8 at 10^6 keys and 2.7e-6 at 10^7.
Rare, not impossible, so a match is confirmed by comparing the stored key text before it is
reported: a false "duplicate" cannot happen. A missed one cannot either: equal keys have
equal digests, every entry with that digest is looked at, and a digest collision only costs
one chunk's decompression. The digest is keyed with a random salt per table, so keys chosen
to collide (slow probes) cannot be prepared in advance.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import zlib
from array import array
from collections.abc import Iterator

#: Keys per compressed chunk of locations: small enough to decompress in microseconds when a
#: digest matches, large enough for zlib to find the keys' common shape.
_CHUNK = 1024
_LOAD_NUM, _LOAD_DEN = 2, 3  # the index doubles past 2/3 full


class SeenKeys:
    """Keys in the order they were added, each with where it was seen (source, line).

    ``where`` words the location exactly as ``Assessment.where`` does for the record first
    added with that key. A source is any text (a file path) or None (no file: the message
    names the key); line 0 means "no line".
    """

    def __init__(self) -> None:
        self._salt = os.urandom(16)
        #: blake2b keyed with the salt, copied per key (cheaper than keying it each time)
        self._keyed = hashlib.blake2b(digest_size=8, key=self._salt)
        self._digests = array("Q")
        self._index = array("I", [0]) * 1024  # entry + 1 per slot; 0 = empty
        self._mask = 1023
        self._sealed: list[bytes] = []  # zlib of "key\tline\n" lines, _CHUNK keys each
        self._pending: list[str] = []
        self._cached: tuple[int, list[str]] = (-1, [])
        self._sources: list[str | None] = []  # one per run of entries from the same source
        self._starts: list[int] = []  # the first entry of each run

    def __len__(self) -> int:
        return len(self._digests)

    def _digest(self, key: str) -> int:
        hashed = self._keyed.copy()
        hashed.update(key.encode())
        return int.from_bytes(hashed.digest(), "little")

    def add(self, key: str, source: str | None, line: int | None) -> None:
        """Record ``key`` as seen at ``source``:``line`` (a key added twice keeps both)."""
        self._add(key, self._digest(key), source, line, None)

    def check_in(self, key: str, source: str | None, line: int | None) -> str | None:
        """``where(key)`` for a key added before; otherwise ``key`` is added, and None.

        The duplicate check of one record, once per record of an import: its key hashed
        once, and a new key (the usual case) probed once, for its free slot."""
        digest = self._digest(key)
        index, digests, mask = self._index, self._digests, self._mask
        slot, confirmed = digest & mask, False
        while held := index[slot]:
            if not confirmed and digests[held - 1] == digest:
                first = self._where(key, digest)  # every entry with this digest, confirmed
                if first is not None:
                    return first
                confirmed = True  # a digest collision: the key is new after all
            slot = (slot + 1) & mask
        self._add(key, digest, source, line, slot)
        return None

    def _add(
        self, key: str, digest: int, source: str | None, line: int | None, free: int | None
    ) -> None:
        """Append an entry; ``free`` is its free slot if the caller probed for it already."""
        if "\n" in key:  # the chunks are lines; assessment keys never hold one (model.KEY)
            raise ValueError("a key with a line break")
        entry = len(self._digests)
        if not self._sources or self._sources[-1] != source:
            self._sources.append(source)
            self._starts.append(entry)
        self._digests.append(digest)
        self._pending.append(f"{key}\t{line or 0}")
        if len(self._pending) == _CHUNK:
            self._sealed.append(zlib.compress("\n".join(self._pending).encode()))
            self._pending = []
        if (entry + 1) * _LOAD_DEN > (self._mask + 1) * _LOAD_NUM:
            self._grow()
        elif free is not None:
            self._index[free] = entry + 1
        else:
            self._place(digest, entry)

    def where(self, key: str) -> str | None:
        """Where the record first added with ``key`` was seen, as ``Assessment.where`` says
        it (``file:line``, the file, or ``assessment KEY``), or None if never added."""
        return self._where(key, self._digest(key))

    def _where(self, key: str, digest: int) -> str | None:
        for source, line in self._locations(key, digest):
            if source is None:
                return f"assessment {key}"
            return f"{source}:{line}" if line else source
        return None

    def locations(self, key: str) -> Iterator[tuple[str | None, int]]:
        """(source, line) of every entry added with exactly ``key``, in the order added."""
        return self._locations(key, self._digest(key))

    def _locations(self, key: str, digest: int) -> Iterator[tuple[str | None, int]]:
        for entry in sorted(self._candidates(digest)):
            stored, line = self._entry(entry)
            if stored == key:  # the digest only said "maybe"
                run = bisect.bisect_right(self._starts, entry) - 1
                yield self._sources[run], line

    def _candidates(self, digest: int) -> Iterator[int]:
        """Entries whose digest equals ``digest`` (linear probing from its home slot)."""
        index, digests, mask = self._index, self._digests, self._mask
        slot = digest & mask
        while True:
            held = index[slot]
            if not held:
                return
            if digests[held - 1] == digest:
                yield held - 1
            slot = (slot + 1) & mask

    def _place(self, digest: int, entry: int) -> None:
        index, mask = self._index, self._mask
        slot = digest & mask
        while index[slot]:
            slot = (slot + 1) & mask
        index[slot] = entry + 1

    def _grow(self) -> None:
        """Double the index and place every entry again (in order, so entries that share a
        digest stay in the order they were added along their probe run)."""
        size = (self._mask + 1) * 2
        self._index = array("I", [0]) * size
        self._mask = size - 1
        for entry, digest in enumerate(self._digests):
            self._place(digest, entry)

    def _entry(self, entry: int) -> tuple[str, int]:
        """The key text and line of one entry (its chunk decompressed, the last one kept)."""
        chunk, offset = divmod(entry, _CHUNK)
        if chunk == len(self._sealed):
            lines = self._pending
        elif self._cached[0] == chunk:
            lines = self._cached[1]
        else:
            lines = zlib.decompress(self._sealed[chunk]).decode().split("\n")
            self._cached = (chunk, lines)
        key, _, line = lines[offset].rpartition("\t")
        return key, int(line)
