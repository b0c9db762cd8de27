"""The portal's SQLite storage: registry entries (compare-and-set) and skyfiles (quota, expiry)."""

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
    revision   TEXT NOT NULL,      -- uint64 as 20-digit zero-padded text (sqlite ints are signed)
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


def _rev(revision: int) -> str:
    return f"{revision:020d}"


class PortalDB:
    """Thread-safe wrapper: one connection, one lock, short transactions."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get_entry(self, public_key: bytes, data_key: bytes) -> RegistryEntry | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT revision, data, signature FROM registry WHERE public_key=? AND data_key=?",
                (public_key, data_key)).fetchone()
        if row is None:
            return None
        return RegistryEntry(public_key, data_key, bytes(row[1]), int(row[0]), bytes(row[2]))

    def set_entry(self, entry: RegistryEntry) -> bool:
        """Atomic compare-and-set: store only if the revision grows. False when it does not."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO registry(public_key, data_key, revision, data, signature) VALUES (?,?,?,?,?) "
                "ON CONFLICT(public_key, data_key) DO UPDATE SET revision=excluded.revision, "
                "data=excluded.data, signature=excluded.signature WHERE excluded.revision > registry.revision",
                (entry.public_key, entry.data_key, _rev(entry.revision), entry.data, entry.signature))
            return cur.rowcount == 1

    def put_blob(self, skylink: str, content: bytes, quota_bytes: int) -> bool:
        """Store a blob; False when the quota would be exceeded."""
        with self._lock:
            if self._conn.execute("SELECT 1 FROM blobs WHERE skylink=?", (skylink,)).fetchone():
                self._conn.execute("UPDATE blobs SET created=? WHERE skylink=?", (time.time(), skylink))
                return True
            used = self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()[0]
            if used + len(content) > quota_bytes:
                return False
            self._conn.execute("INSERT INTO blobs(skylink, content, size, created) VALUES (?,?,?,?)",
                               (skylink, content, len(content), time.time()))
            return True

    def get_blob(self, skylink: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute("SELECT content FROM blobs WHERE skylink=?", (skylink,)).fetchone()
        return bytes(row[0]) if row else None

    def expire_blobs(self, older_than_s: float) -> int:
        with self._lock:
            cur = self._conn.execute("DELETE FROM blobs WHERE created < ?", (time.time() - older_than_s,))
            return cur.rowcount
