"""The index's figures in columns (numpy): one row per offer, so a search or a listing over
20,000 offers is a few array operations instead of a Python loop per offer (bench/exchange.py:
a search scanned every offer in 80-230 ms; the target is 50 ms at the 99th percentile).

Per row: the forecast's prefix sums (169 numbers), its start, the record's ``updated``,
``evidence.last_heard``, whether the plant's source tells silence from idle, whether the record
says free now, whether the plant's status says offline, and the row's rank in (plant, machine)
order. Postings (the rows holding each plant, kind, line and capability value) narrow a query's
equality filters to their rows before anything is computed; a value is posted as what it equals
under the query's rules (``query._equal``: text as text, numbers as numbers, flags as flags, each
element of a list), so an intersection of postings is exactly the rows those filters match.

Pure and owned by the ``Index`` (it writes a row on every offer, clears one on a delete); read
on the event loop only, like the index.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

HOURS = 168
NO_TIME = np.iinfo(np.int64).min  # last_heard unknown
Key = tuple[str, str]
Post = tuple[str, str, Any]  # (field or capability name, type tag, value)
Rows = npt.NDArray[np.int64]


def posts(fields: dict[str, Any]) -> list[Post]:
    """What a record is found by: its plant, kind and line, and each capability value."""
    out: list[Post] = [(f, "s", fields[f]) for f in ("plant", "kind", "line")]
    for name, value in fields["capabilities"].items():
        for v in value if isinstance(value, list) else [value]:
            tagged = tag(v)
            if tagged is not None:
                out.append(("capability." + name, *tagged))
    return out


def tag(value: Any) -> tuple[str, Any] | None:
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", float(value)) if math.isfinite(float(value)) else None
    if isinstance(value, str):
        return ("s", value)
    return None


class Columns:
    def __init__(self, size: int = 1024) -> None:
        self.rows: dict[Key, int] = {}
        self.keys: list[Key | None] = []
        self.caps: list[dict[str, Any] | None] = []  # by row: the capabilities (comparisons are checked on them)
        self._free_rows: list[int] = []
        self.postings: dict[Post, set[int]] = {}
        self.numbers: dict[str, set[float]] = {}  # capability -> its numbers posted (for comparisons)
        self._row_posts: dict[int, list[Post]] = {}
        self.plant_rows: dict[str, set[int]] = {}
        self._alloc(size)
        self._rank_dirty = True
        self._names: dict[int, tuple[str, str]] = {}  # row -> the record's (plant, machine), for the order

    def _alloc(self, size: int) -> None:
        self.shares = np.zeros((size, HOURS))
        self.prefix = np.zeros((size, HOURS + 1))
        self.start_ns = np.zeros(size, np.int64)
        self.updated_ns = np.zeros(size, np.int64)
        self.heard_ns = np.full(size, NO_TIME, np.int64)
        self.silence = np.zeros(size, bool)
        self.idle = np.zeros(size, bool)
        self.offline = np.zeros(size, bool)
        self.live = np.zeros(size, bool)
        self.rank = np.zeros(size, np.int64)

    def _grow(self) -> None:
        old = len(self.live)
        names = ("shares", "prefix", "start_ns", "updated_ns", "heard_ns", "silence", "idle", "offline", "live", "rank")
        arrays = {n: getattr(self, n) for n in names}
        self._alloc(old * 2)
        for name, values in arrays.items():
            getattr(self, name)[:old] = values

    def put(self, key: Key, fields: dict[str, Any], shares: npt.ArrayLike, prefix: npt.ArrayLike, start_ns: int,
            updated_ns: int,
            heard_ns: int | None, silence: bool, plant_offline: bool) -> None:
        row = self.rows.get(key)
        if row is None:
            if not self._free_rows:
                if len(self.keys) == len(self.live):
                    self._grow()
                self._free_rows.append(len(self.keys))
                self.keys.append(None)
                self.caps.append(None)
            row = self._free_rows.pop()
            self.rows[key] = row
            self.keys[row] = key
            self.plant_rows.setdefault(key[0], set()).add(row)
            self.live[row] = True
        names = (fields["plant"], fields["machine"])
        if self._names.get(row) != names:
            self._names[row] = names
            self._rank_dirty = True
        self._unpost(row)
        self.caps[row] = fields["capabilities"]
        found = posts(fields)
        self._row_posts[row] = found
        for p in found:
            self.postings.setdefault(p, set()).add(row)
            if p[1] == "n":
                self.numbers.setdefault(p[0], set()).add(p[2])
        self.shares[row] = shares
        self.prefix[row] = prefix
        self.start_ns[row] = start_ns
        self.updated_ns[row] = updated_ns
        self.heard_ns[row] = NO_TIME if heard_ns is None else heard_ns
        self.silence[row] = silence
        self.idle[row] = bool(fields["free_now"])
        self.offline[row] = plant_offline

    def _unpost(self, row: int) -> None:
        for p in self._row_posts.pop(row, []):
            rows = self.postings.get(p)
            if rows is not None:
                rows.discard(row)
                if not rows:
                    del self.postings[p]
                    if p[1] == "n":
                        self.numbers[p[0]].discard(p[2])

    def drop(self, key: Key) -> None:
        row = self.rows.pop(key, None)
        if row is None:
            return
        self._unpost(row)
        self.plant_rows[key[0]].discard(row)
        if not self.plant_rows[key[0]]:
            del self.plant_rows[key[0]]
        self.keys[row] = None
        self.caps[row] = None
        self._names.pop(row, None)
        self.live[row] = False
        self._free_rows.append(row)
        self._rank_dirty = True

    def clear(self) -> None:
        self.__init__(len(self.live))  # type: ignore[misc]

    def set_plant(self, plant: str, offline: bool) -> None:
        rows = self.plant_rows.get(plant)
        if rows:
            self.offline[list(rows)] = offline

    # -- reading ------------------------------------------------------------------------------

    def compared(self, name: str, holds: Callable[[float], bool]) -> list[Post]:
        """The posts of capability ``name``'s numbers for which ``holds`` (a comparison): a row
        holding any of them matches it (a number, or a list with one such number)."""
        return [(name, "n", v) for v in self.numbers.get(name, ()) if holds(v)]

    def candidates(self, equal: list[list[Post]]) -> Rows:
        """The live rows matching every group of ``equal`` (a group matches when one of its posts
        does: one filter's value under each type it can equal, or each number a comparison
        holds for); all live rows with no group."""
        found: set[int] | None = None
        for group in sorted(equal, key=lambda g: sum(len(self.postings.get(p, ())) for p in g)):
            rows: set[int] = set()
            for p in group:
                rows |= self.postings.get(p, set())
            found = rows if found is None else found & rows
            if not found:
                return np.zeros(0, np.int64)
        if found is None:
            return np.flatnonzero(self.live)
        return np.fromiter(found, np.int64, len(found))

    def ranks(self, rows: Rows) -> Rows:
        """Each row's place in (plant, machine) order: sorted again only after offers came or went
        (20,000 take ~20 ms; ``settle`` does it before a request has to)."""
        if self._rank_dirty:
            order = sorted(self._names, key=self._names.__getitem__)
            self.rank[order] = np.arange(len(order))
            self._rank_dirty = False
        return self.rank[rows]

    def settle(self) -> None:
        self.ranks(np.zeros(0, np.int64))

    def stale(self, rows: Rows, now_ns: int, stale_after_s: float) -> npt.NDArray[np.bool_]:
        """``query.evidence_age_s`` is None or above the bound, per row."""
        age = (now_ns - self.updated_ns[rows]) / 1e9
        heard = self.heard_ns[rows]
        blind = ~self.silence[rows]
        unknown = blind & (heard == NO_TIME)
        heard_age = np.where(heard == NO_TIME, 0.0, (now_ns - np.where(heard == NO_TIME, 0, heard)) / 1e9)
        age = np.where(blind, np.maximum(age, heard_age), age)
        stale: npt.NDArray[np.bool_] = unknown | (np.maximum(age, 0.0) > stale_after_s)
        return stale

    def free_now(self, rows: Rows, now_ns: int, stale_after_s: float) -> npt.NDArray[np.bool_]:
        return self.idle[rows] & ~self.offline[rows] & ~self.stale(rows, now_ns, stale_after_s)

    def free_hours(self, rows: Rows, begin_ns: int, end_ns: int) -> npt.NDArray[np.float64]:
        """``query.free_hours`` of each row, the same arithmetic in the same order."""
        hour = 3600 * 10**9
        start = self.start_ns[rows]
        begin = np.maximum(begin_ns, start)
        end = np.minimum(end_ns, start + HOURS * hour)
        some = end > begin
        i0 = np.clip((begin - start) // hour, 0, HOURS - 1)
        i1 = np.clip((end - start) // hour, 0, HOURS)
        p = self.prefix
        share0 = self.shares[rows, i0]
        share1 = self.shares[rows, np.minimum(i1, HOURS - 1)]
        same = i0 == i1
        one = share0 * (end - begin) / hour
        total = share0 * (start + (i0 + 1) * hour - begin) / hour
        total = total + (p[rows, i1] - p[rows, i0 + 1])
        total = total + np.where(i1 < HOURS, share1 * (end - start - i1 * hour) / hour, 0.0)
        return np.where(some, np.where(same, one, total), 0.0)
