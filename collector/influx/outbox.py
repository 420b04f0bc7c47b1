"""The outbox store: points on disk in SQLite (WAL mode) until InfluxDB accepted them.

Each ``append`` is one row holding a chunk of line protocol, zlib-compressed (one row per
chunk keeps appends and drains to one statement each, and compression keeps hours of outage
small on a gateway's flash). Rows leave oldest-first: ``ack`` deletes what InfluxDB accepted,
``dead_letter`` keeps what it refused for a data reason, ``enforce_bound`` drops the oldest
rows past the size bound. Not thread-safe: the sink drives it from one worker thread.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        self.db.executescript(_SCHEMA)
        self.points: int = 0
        self.bytes: int = 0
        # append time of the oldest stored point, kept here so other threads never query
        self.oldest: float | None = None
        self._recount()
        self.dead: int = self.db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def append(self, lines: Sequence[str]) -> None:
        """Store ``lines`` durably (one transaction); returns once committed."""
        if not lines:
            return
        payload = zlib.compress("\n".join(lines).encode(), 1)
        self.db.execute("INSERT INTO outbox (created, points, bytes, payload) VALUES (?, ?, ?, ?)",
                        (time.time(), len(lines), len(payload), payload))
        self.points += len(lines)
        self.bytes += len(payload)
        if self.oldest is None:
            self.oldest = time.time()

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
