"""The portal's SQLite storage: registry entries (atomic compare-and-set) and skyfiles (quota, expiry).

One connection behind one lock, WAL mode, every operation a single short statement or transaction,
so the server can call these from a worker thread without blocking its event loop for long.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from sdparta.store.base import RegistryEntry

SCHEMA = """
CREATE TABLE IF NOT EXISTS registry (
    public_key BLOB NOT NULL,
    data_key   BLOB NOT NULL,
    revision   TEXT NOT NULL,      -- uint64 as 20-digit zero-padded text (sqlite integers are signed)
    data       BLOB NOT NULL,
    signature  BLOB NOT NULL,
    PRIMARY KEY (public_key, data_key)
);
CREATE TABLE IF NOT EXISTS blobs (
    skylink    TEXT PRIMARY KEY,
    content    BLOB NOT NULL,
    size       INTEGER NOT NULL,
    created    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_created ON blobs(created);
"""


class QuotaExceeded(Exception):
    """Storing the blob would exceed the portal's total skyfile quota."""


def _rev(revision: int) -> str:
    return f"{revision:020d}"


class PortalDB:
    """Thread-safe wrapper around one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._used = int(self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ registry
    def get_entry(self, public_key: bytes, data_key: bytes) -> RegistryEntry | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT revision, data, signature FROM registry WHERE public_key=? AND data_key=?",
                (public_key, data_key)).fetchone()
        if row is None:
            return None
        return RegistryEntry(public_key, data_key, bytes(row[1]), int(row[0]), bytes(row[2]))

    def set_entry(self, entry: RegistryEntry) -> bool:
        """Atomic compare-and-set in one statement: stored only if the slot is empty or the revision
        grows (an equal revision is refused too). False when refused; the stored row is untouched."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO registry(public_key, data_key, revision, data, signature) VALUES (?,?,?,?,?) "
                "ON CONFLICT(public_key, data_key) DO UPDATE SET revision=excluded.revision, "
                "data=excluded.data, signature=excluded.signature WHERE excluded.revision > registry.revision",
                (entry.public_key, entry.data_key, _rev(entry.revision), entry.data, entry.signature))
            return cur.rowcount == 1

    def entry_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM registry").fetchone()[0])

    # ------------------------------------------------------------------ blobs
    def put_blob(self, skylink: str, content: bytes, quota_bytes: int) -> None:
        """Store a blob (or refresh its age if already stored); QuotaExceeded when full."""
        now = time.time()
        with self._lock:
            cur = self._conn.execute("UPDATE blobs SET created=? WHERE skylink=?", (now, skylink))
            if cur.rowcount:
                return
            if self._used + len(content) > quota_bytes:
                raise QuotaExceeded(f"{self._used} of {quota_bytes} bytes used")
            self._conn.execute("INSERT INTO blobs(skylink, content, size, created) VALUES (?,?,?,?)",
                               (skylink, content, len(content), now))
            self._used += len(content)

    def get_blob(self, skylink: str, max_age_s: float | None = None) -> bytes | None:
        """The blob, or None when unknown or older than ``max_age_s`` (expired, not yet swept)."""
        with self._lock:
            row = self._conn.execute("SELECT content, created FROM blobs WHERE skylink=?", (skylink,)).fetchone()
        if row is None or (max_age_s is not None and row[1] < time.time() - max_age_s):
            return None
        return bytes(row[0])

    def expire_blobs(self, older_than_s: float) -> int:
        """Delete blobs older than the TTL; returns how many."""
        cutoff = time.time() - older_than_s
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                freed = int(self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM blobs WHERE created < ?",
                                               (cutoff,)).fetchone()[0])
                removed = self._conn.execute("DELETE FROM blobs WHERE created < ?", (cutoff,)).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._used -= freed
            return removed

    @property
    def used_bytes(self) -> int:
        return self._used
