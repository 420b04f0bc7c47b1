"""The outbox store: points on disk in SQLite (WAL mode) until InfluxDB accepted them.

Each ``append`` is one row holding a chunk of line protocol, zlib-compressed (one row per
chunk keeps appends and drains to one statement each, and compression keeps hours of outage
small on a gateway's flash). Rows leave oldest-first: ``ack`` deletes what InfluxDB accepted,
``dead_letter`` keeps what it refused for a data reason, ``enforce_bound`` drops the oldest
rows past the size bound. Not thread-safe: the sink drives it from one worker thread.

The same file is the trackers' checkpoint: ``append`` stores the points and the state of the
trackers that produced them in one transaction, so after a crash the collector resumes from
exactly the state its stored points describe. ``PRAGMA user_version`` holds the schema
version; older files are migrated on open, newer ones refused.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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

SCHEMA_VERSION = 1
# Each step takes a file from version N to N+1 (index N). Version 0: the outbox and dead-letter
# tables of release 0.1, without a version mark.
_MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS tracker_state (
        machine TEXT PRIMARY KEY,
        saved_ns INTEGER NOT NULL,
        snapshot BLOB NOT NULL
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

    @property
    def lines(self) -> list[str]:
        return self.body.decode().split("\n")


class OutboxStore:
    def __init__(self, path: Path, *, sync: str = "full") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._check_version()  # before anything writes: a newer release's file is left as it is
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        self._migrate()
        self.points: int = 0
        self.bytes: int = 0
        # append time of the oldest stored point, kept here so other threads never query
        self.oldest: float | None = None
        self._recount()
        self.dead: int = self.db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]

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
            self.db.execute(_MIGRATIONS[step])
            self.db.execute(f"PRAGMA user_version = {step + 1}")
            self.db.execute("COMMIT")

    def append(self, lines: Sequence[str], state: Mapping[str, bytes] | None = None) -> None:
        """Store ``lines`` and the trackers' ``state`` (machine id -> snapshot) durably, in one
        transaction; returns once committed."""
        if not lines and not state:
            return
        now = time.time()
        payload = zlib.compress("\n".join(lines).encode(), 1) if lines else b""
        self.db.execute("BEGIN")
        try:
            if lines:
                self.db.execute("INSERT INTO outbox (created, points, bytes, payload) VALUES (?, ?, ?, ?)",
                                (now, len(lines), len(payload), payload))
            if state:
                saved_ns = time.time_ns()
                self.db.executemany(
                    "INSERT OR REPLACE INTO tracker_state (machine, saved_ns, snapshot) VALUES (?, ?, ?)",
                    [(mid, saved_ns, snap) for mid, snap in state.items()])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if lines:
            self.points += len(lines)
            self.bytes += len(payload)
            if self.oldest is None:
                self.oldest = now

    def load_state(self) -> dict[str, tuple[bytes, int]]:
        """Every machine's last committed tracker snapshot and when it was committed (ns)."""
        return {mid: (snap, saved) for mid, saved, snap in
                self.db.execute("SELECT machine, saved_ns, snapshot FROM tracker_state")}

    def peek(self, max_points: int) -> list[Chunk]:
        """The oldest chunks, up to ``max_points`` points (at least one chunk)."""
        chunks: list[Chunk] = []
        total = 0
        for row_id, created, points, payload in self.db.execute(
                "SELECT id, created, points, payload FROM outbox ORDER BY id LIMIT 1000"):
            if chunks and total + points > max_points:
                break
            chunks.append(Chunk(row_id, created, points, zlib.decompress(payload)))
            total += points
        return chunks

    def ack(self, ids: Sequence[int]) -> None:
        """Delete delivered chunks."""
        self._delete(ids)

    def dead_letter(self, lines: Sequence[str], error: str) -> None:
        now = time.time()
        self.db.executemany("INSERT INTO dead_letter (created, line, error) VALUES (?, ?, ?)",
                            [(now, line, error) for line in lines])
        self.dead += len(lines)

    def enforce_bound(self, max_bytes: int) -> int:
        """Drop the oldest chunks until the stored bytes fit ``max_bytes``; the points dropped."""
        dropped = 0
        while self.bytes > max_bytes:
            rows = self.db.execute("SELECT id, points, bytes FROM outbox ORDER BY id LIMIT 64").fetchall()
            if not rows:
                break
            ids, excess = [], self.bytes - max_bytes
            for row_id, points, size in rows:
                ids.append(row_id)
                dropped += points
                excess -= size
                if excess <= 0:
                    break
            self._delete(ids)
        return dropped

    def dead_lines(self) -> list[tuple[str, str]]:
        return [(line, error) for line, error in self.db.execute("SELECT line, error FROM dead_letter ORDER BY id")]

    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))

    def _delete(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        self.db.execute("BEGIN")
        try:
            for start in range(0, len(ids), 500):
                part = list(ids[start:start + 500])
                marks = ",".join("?" * len(part))
                points, size = self.db.execute(
                    f"SELECT COALESCE(SUM(points), 0), COALESCE(SUM(bytes), 0) FROM outbox WHERE id IN ({marks})",
                    part).fetchone()
                self.db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", part)
                self.points -= points
                self.bytes -= size
            self.db.execute("COMMIT")
            row = self.db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
            self.oldest = None if row is None else float(row[0])
        except BaseException:
            self.db.execute("ROLLBACK")
            self._recount()
            raise

    def _recount(self) -> None:
        self.points, self.bytes = self.db.execute(
            "SELECT COALESCE(SUM(points), 0), COALESCE(SUM(bytes), 0) FROM outbox").fetchone()
        row = self.db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        self.oldest = None if row is None else float(row[0])
