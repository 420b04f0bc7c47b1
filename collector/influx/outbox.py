"""The outbox store: points on disk in SQLite (WAL mode) until every output is done with them.

Each ``append`` is one row holding a chunk of line protocol, zlib-compressed (one row per
chunk keeps appends and drains to one statement each, and compression keeps hours of outage
small on a gateway's flash). A row is stored once for every output: each output has a
**cursor**, the id of the last row it is done with (delivered, filtered out, dead-lettered
or dropped by its bound), and reads the rows after it. ``advance`` moves one output's cursor;
a row is deleted once every configured output's cursor has passed it. ``dead_letter`` keeps
what an output's server refused for a data reason, under that output's name;
``enforce_bound`` moves an output's cursor past its oldest rows when its backlog outgrows
its bound. Not thread-safe: the sink drives it from one worker thread.

The same file is the trackers' checkpoint: ``append`` stores the points and the state of the
trackers that produced them in one transaction, so after a crash the collector resumes from
exactly the state its stored points describe. ``PRAGMA user_version`` holds the schema
version; older files are migrated on open, newer ones refused.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from collector.core.correction import is_correction
from collector.core.errors import CollectorError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    points INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    line TEXT NOT NULL,
    error TEXT NOT NULL
);
"""

SCHEMA_VERSION = 3
POINTS, CORRECTION = "points", "correction"  # the kinds of row
DEFAULT_OUTPUT = "influx"  # the output of `influx:`, and the owner of a single-output file's rows
# Each step takes a file from version N to N+1 (index N). Version 0: the outbox and dead-letter
# tables of release 0.1, without a version mark.
_MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS tracker_state (
        machine TEXT PRIMARY KEY,
        saved_ns INTEGER NOT NULL,
        snapshot BLOB NOT NULL
    );""",
    # 1 -> 2: outputs. A file of one output has no cursor: its stored rows are undelivered, so
    # every output starts before them (cursor 0) and `influx:` drains them as before. Its dead
    # letters were the one output's: they belong to `influx`.
    """CREATE TABLE IF NOT EXISTS output_cursor (
        output TEXT PRIMARY KEY,
        acked INTEGER NOT NULL
    );
    ALTER TABLE dead_letter ADD COLUMN output TEXT NOT NULL DEFAULT 'influx';""",
    # 2 -> 3: corrections (collector/core/correction.py). A row is points or a correction,
    # which each output applies in its turn; what an output read back for a correction before
    # deleting it is kept until the rewrite is done (crash-exact). Old rows are points.
    """ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'points';
    CREATE TABLE IF NOT EXISTS correction_work (
        output TEXT NOT NULL,
        row_id INTEGER NOT NULL,
        payload BLOB NOT NULL,
        PRIMARY KEY (output, row_id)
    );""",
]


class SchemaError(CollectorError):
    """An outbox file written by a newer release than this one."""


@dataclass(frozen=True, slots=True)
class Chunk:
    id: int
    created: float
    points: int
    body: bytes  # line protocol, one point per line
    kind: str = POINTS  # or CORRECTION: body is one correction record (collector/core/correction.py)

    @property
    def lines(self) -> list[str]:
        return self.body.decode().split("\n")


class OutboxStore:
    def __init__(self, path: Path, *, sync: str = "full", outputs: Iterable[str] = (DEFAULT_OUTPUT,)) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.outputs = list(dict.fromkeys(outputs))
        if not self.outputs:
            raise ValueError("an outbox needs at least one output")
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._check_version()  # before anything writes: a newer release's file is left as it is
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        self._migrate()
        self.removed = self._own_cursors()
        # stored rows (not yet passed by every output), and per output its backlog: kept here so
        # other threads read figures, never the database
        self.points: int = 0
        self.bytes: int = 0
        self.oldest: float | None = None  # append time of the oldest stored point
        self.cursor: dict[str, int] = {}
        self.pending_points: dict[str, int] = {}
        self.pending_bytes: dict[str, int] = {}
        self.pending_oldest: dict[str, float | None] = {}
        self._recount()
        self._delete_passed()
        self.dead: dict[str, int] = {o: 0 for o in self.outputs}
        for output, n in self.db.execute("SELECT output, COUNT(*) FROM dead_letter GROUP BY output"):
            self.dead[output] = n

    def close(self) -> None:
        self.db.close()

    def _check_version(self) -> int:
        version: int = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self.db.close()
            raise SchemaError(f"{self.path} has outbox schema version {version}, this release knows up to "
                              f"{SCHEMA_VERSION}: it was written by a newer collector (upgrade, or move the file)")
        return version

    def _migrate(self) -> None:
        version = self._check_version()
        self.db.executescript(_SCHEMA)
        for step in range(version, SCHEMA_VERSION):
            self.db.execute("BEGIN")
            for statement in _MIGRATIONS[step].split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version = {step + 1}")
            self.db.execute("COMMIT")

    def _own_cursors(self) -> list[str]:
        """A cursor for each configured output (a new one starts before every stored row); the
        cursors of outputs no longer configured are removed, so they hold no row back. Returns
        the removed outputs' names."""
        self.db.execute("BEGIN")
        known = {name for (name,) in self.db.execute("SELECT output FROM output_cursor")}
        self.db.executemany("INSERT OR IGNORE INTO output_cursor (output, acked) VALUES (?, 0)",
                            [(o,) for o in self.outputs])
        removed = sorted(known - set(self.outputs))
        self.db.executemany("DELETE FROM output_cursor WHERE output = ?", [(o,) for o in removed])
        self.db.execute("COMMIT")
        return removed

    def append(self, lines: Sequence[str], state: Mapping[str, bytes] | None = None) -> None:
        """Store ``lines`` (once, for every output) and the trackers' ``state`` (machine id ->
        snapshot) durably, in one transaction; returns once committed."""
        if not lines and not state:
            return
        now = time.time()
        rows = _rows(lines)
        size = sum(len(payload) for _, _, payload in rows)
        points = sum(n for _, n, _ in rows)
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT INTO outbox (created, points, bytes, payload, kind) VALUES (?, ?, ?, ?, ?)",
                                [(now, n, len(payload), payload, kind) for kind, n, payload in rows])
            if state:
                saved_ns = time.time_ns()
                self.db.executemany(
                    "INSERT OR REPLACE INTO tracker_state (machine, saved_ns, snapshot) VALUES (?, ?, ?)",
                    [(mid, saved_ns, snap) for mid, snap in state.items()])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if rows:
            self.points += points
            self.bytes += size
            if self.oldest is None:
                self.oldest = now
            for o in self.outputs:
                self.pending_points[o] += points
                self.pending_bytes[o] += size
                if self.pending_oldest[o] is None:
                    self.pending_oldest[o] = now

    def load_state(self) -> dict[str, tuple[bytes, int]]:
        """Every machine's last committed tracker snapshot and when it was committed (ns)."""
        return {mid: (snap, saved) for mid, saved, snap in
                self.db.execute("SELECT machine, saved_ns, snapshot FROM tracker_state")}

    def peek(self, max_points: int, output: str | None = None) -> list[Chunk]:
        """The oldest chunks ``output`` has not passed (without it: the oldest stored), up to
        ``max_points`` points (at least one chunk). A correction comes alone: the points before
        it are delivered first, those after it only once it is applied."""
        after = self.cursor[output] if output is not None else 0
        chunks: list[Chunk] = []
        total = 0
        for row_id, created, points, payload, kind in self.db.execute(
                "SELECT id, created, points, payload, kind FROM outbox WHERE id > ? ORDER BY id LIMIT 1000", (after,)):
            if chunks and (total + points > max_points or kind == CORRECTION):
                break
            chunks.append(Chunk(row_id, created, points, zlib.decompress(payload), kind))
            total += points
            if kind == CORRECTION:
                break
        return chunks

    def correction_work(self, output: str, row_id: int) -> bytes | None:
        """What ``output`` read back for the correction in row ``row_id``, if it got that far."""
        row = self.db.execute("SELECT payload FROM correction_work WHERE output = ? AND row_id = ?",
                              (output, row_id)).fetchone()
        return None if row is None else zlib.decompress(row[0])

    def save_correction_work(self, output: str, row_id: int, work: bytes) -> None:
        """Keep what ``output`` read back before it deletes anything: a crash between the delete
        and the rewrite then rewrites from it, not from what is left on the server."""
        self.db.execute("INSERT OR REPLACE INTO correction_work (output, row_id, payload) VALUES (?, ?, ?)",
                        (output, row_id, zlib.compress(work, 1)))

    def advance(self, output: str, upto: int) -> None:
        """``output`` is done with every row up to id ``upto``: move its cursor (never back) and
        delete the rows every output has passed, in one transaction."""
        old = self.cursor[output]
        if upto <= old:
            return
        # never past the last row appended: a later row would count as passed before it was read
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        upto = min(upto, int(row[0]) if row else 0)
        if upto <= old:
            return
        self.db.execute("BEGIN")
        try:
            points, size = self.db.execute(
                "SELECT COALESCE(SUM(points), 0), COALESCE(SUM(bytes), 0) FROM outbox WHERE id > ? AND id <= ?",
                (old, upto)).fetchone()
            self.db.execute("UPDATE output_cursor SET acked = ? WHERE output = ?", (upto, output))
            self.db.execute("DELETE FROM correction_work WHERE output = ? AND row_id <= ?", (output, upto))
            floor = min(upto if o == output else self.cursor[o] for o in self.outputs)
            gone = self._delete_upto(floor)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self._recount()
            raise
        self.cursor[output] = upto
        self.pending_points[output] -= points
        self.pending_bytes[output] -= size
        self.pending_oldest[output] = self._oldest_after(upto)
        if gone:
            self.points -= gone[0]
            self.bytes -= gone[1]
            self.oldest = self._oldest_after(0)

    def dead_letter(self, lines: Sequence[str], error: str, output: str = DEFAULT_OUTPUT) -> None:
        now = time.time()
        self.db.executemany("INSERT INTO dead_letter (created, line, error, output) VALUES (?, ?, ?, ?)",
                            [(now, line, error, output) for line in lines])
        self.dead[output] = self.dead.get(output, 0) + len(lines)

    def enforce_bound(self, max_bytes: int, output: str = DEFAULT_OUTPUT) -> int:
        """Move ``output``'s cursor past its oldest rows until its backlog fits ``max_bytes``;
        the points it dropped (the rows stay while another output still needs them)."""
        excess = self.pending_bytes[output] - max_bytes
        if excess <= 0:
            return 0
        dropped, upto = 0, self.cursor[output]
        for row_id, points, size in self.db.execute(
                "SELECT id, points, bytes FROM outbox WHERE id > ? ORDER BY id", (upto,)):
            upto = row_id
            dropped += points
            excess -= size
            if excess <= 0:
                break
        self.advance(output, upto)
        return dropped

    def dead_lines(self, output: str | None = None) -> list[tuple[str, str]]:
        if output is None:
            return list(self.db.execute("SELECT line, error FROM dead_letter ORDER BY id"))
        return list(self.db.execute("SELECT line, error FROM dead_letter WHERE output = ? ORDER BY id", (output,)))

    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))

    def _delete_upto(self, floor: int) -> tuple[int, int] | None:
        """Delete the rows up to id ``floor`` (inside the caller's transaction); their points and bytes."""
        points, size = self.db.execute(
            "SELECT COALESCE(SUM(points), 0), COALESCE(SUM(bytes), 0) FROM outbox WHERE id <= ?", (floor,)).fetchone()
        if not points and not size:
            return None
        self.db.execute("DELETE FROM outbox WHERE id <= ?", (floor,))
        return points, size

    def _delete_passed(self) -> None:
        """On open: the rows every configured output passed (those an output no longer
        configured held back)."""
        self.db.execute("BEGIN")
        gone = self._delete_upto(min(self.cursor.values()))
        self.db.execute("COMMIT")
        if gone:
            self._recount()

    def _oldest_after(self, after: int) -> float | None:
        row = self.db.execute("SELECT created FROM outbox WHERE id > ? ORDER BY id LIMIT 1", (after,)).fetchone()
        return None if row is None else float(row[0])

    def _recount(self) -> None:
        self.points, self.bytes = self.db.execute(
            "SELECT COALESCE(SUM(points), 0), COALESCE(SUM(bytes), 0) FROM outbox").fetchone()
        self.oldest = self._oldest_after(0)
        cursors = dict(self.db.execute("SELECT output, acked FROM output_cursor"))
        for o in self.outputs:
            self.cursor[o] = int(cursors.get(o, 0))
            self.pending_points[o], self.pending_bytes[o] = self.db.execute(
                "SELECT COALESCE(SUM(points), 0), COALESCE(SUM(bytes), 0) FROM outbox WHERE id > ?",
                (self.cursor[o],)).fetchone()
            self.pending_oldest[o] = self._oldest_after(self.cursor[o])


def _rows(lines: Sequence[str]) -> list[tuple[str, int, bytes]]:
    """``lines`` as rows in their order: runs of points, and each correction record on its own."""
    rows: list[tuple[str, int, bytes]] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            rows.append((POINTS, len(run), zlib.compress("\n".join(run).encode(), 1)))
            run.clear()

    for line in lines:
        if is_correction(line):
            flush()
            rows.append((CORRECTION, 0, zlib.compress(line.encode(), 1)))
        else:
            run.append(line)
    flush()
    return rows
