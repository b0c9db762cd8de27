"""The portal's SQLite storage: registry entries (atomic compare-and-set, expiry) and skyfiles (quota,
per-client shares, expiry).

One connection behind one lock, WAL mode, every operation a few short statements, so the server can
call these from a worker thread without blocking its event loop for long. Blobs remember which client
(IP, or IPv6 /64) uploaded them so one client cannot take the whole quota (see ``BlobPolicy``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from sdparta.portal.options import BlobPolicy
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
#: Columns added after the first release (older files are migrated in place).
MIGRATIONS = (
    ("registry", "updated", "REAL NOT NULL DEFAULT 0"),  # unix time of the last accepted write
    ("blobs", "owner", "TEXT NOT NULL DEFAULT ''"),  # the uploading client (see clients.client_key)
)
INDEXES = "CREATE INDEX IF NOT EXISTS blobs_owner ON blobs(owner, created);"

#: What a stored blob costs beyond its content (row, index entries): counted against the quotas so
#: a flood of empty skyfiles is bounded too.
BLOB_OVERHEAD = 256
#: Rows deleted per lock hold while expiring registry entries (the sweep never stalls requests).
EXPIRY_BATCH = 5000


class QuotaExceeded(Exception):
    """Storing the blob would exceed the portal's quota or this client's share; the message says which."""


def _rev(revision: int) -> str:
    return f"{revision:020d}"


#: The owner of the blobs the portal stores itself (its page builds; a client key is an address,
#: never this): kept outside the skyfile quotas.
PORTAL_OWNER = "sdparta-portal"


class PortalDB:
    """Thread-safe wrapper around one SQLite file."""

    def __init__(self, path: Path, policy: BlobPolicy) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.policy = policy
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        for table, column, decl in MIGRATIONS:
            columns = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        # entries from before expiry existed start their lifetime now rather than expiring at once
        self._conn.execute("UPDATE registry SET updated=? WHERE updated=0", (time.time(),))
        self._conn.executescript(INDEXES)
        self._lock = threading.Lock()
        self._used = 0  # content bytes
        self._charged = 0  # content + overhead: what quotas compare against
        self._large = 0  # charged bytes of blobs above policy.small_blob_bytes
        self._by_owner: dict[str, int] = {}
        self._recount()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ registry
    def get_entry(self, public_key: bytes, data_key: bytes, ttl_s: float | None = None) -> RegistryEntry | None:
        """The entry, or None when absent or not written for ``ttl_s`` (expired, not yet swept)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT revision, data, signature, updated FROM registry WHERE public_key=? AND data_key=?",
                (public_key, data_key)).fetchone()
        if row is None or (ttl_s is not None and row[3] < time.time() - ttl_s):
            return None
        return RegistryEntry(public_key, data_key, bytes(row[1]), int(row[0]), bytes(row[2]))

    def set_entry(self, entry: RegistryEntry, allow_insert: bool = True, ttl_s: float | None = None) -> str:
        """Compare-and-set: ``"updated"`` (the revision grew), ``"inserted"`` (a new slot),
        ``"refused"`` (not newer than the stored revision; an equal one is refused too; the row is
        untouched) or ``"limited"`` (a new slot while ``allow_insert`` is False: nothing written).

        An entry not written for ``ttl_s`` counts as absent (any revision replaces it), as after the
        sweep. Atomic: one lock around it, and the insert is ON CONFLICT DO NOTHING.
        """
        now = time.time()
        cutoff = now - ttl_s if ttl_s is not None else -1.0
        rev = _rev(entry.revision)
        with self._lock:
            cur = self._conn.execute(
                "UPDATE registry SET revision=?, data=?, signature=?, updated=? "
                "WHERE public_key=? AND data_key=? AND (revision < ? OR updated < ?)",
                (rev, entry.data, entry.signature, now, entry.public_key, entry.data_key, rev, cutoff))
            if cur.rowcount == 1:
                return "updated"
            if allow_insert:
                cur = self._conn.execute(
                    "INSERT INTO registry(public_key, data_key, revision, data, signature, updated) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT(public_key, data_key) DO NOTHING",
                    (entry.public_key, entry.data_key, rev, entry.data, entry.signature, now))
                return "inserted" if cur.rowcount == 1 else "refused"
            exists = self._conn.execute("SELECT 1 FROM registry WHERE public_key=? AND data_key=?",
                                        (entry.public_key, entry.data_key)).fetchone()
            return "refused" if exists else "limited"

    def entry_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM registry").fetchone()[0])

    def expire_entries(self, ttl_s: float) -> int:
        """Delete entries not written for ``ttl_s``, in rowid batches (the lock is released between)."""
        cutoff = time.time() - ttl_s
        with self._lock:
            top = self._conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM registry").fetchone()[0]
        removed = 0
        for start in range(0, int(top) + 1, EXPIRY_BATCH):
            with self._lock:
                removed += self._conn.execute(
                    "DELETE FROM registry WHERE rowid >= ? AND rowid < ? AND updated < ?",
                    (start, start + EXPIRY_BATCH, cutoff)).rowcount
        return removed

    # ------------------------------------------------------------------ blobs
    def put_blob(self, skylink: str, content: bytes, owner: str = "") -> None:
        """Store a blob for ``owner`` (or refresh its age if already stored: the first uploader stays
        its owner, so nobody can move another client's blob into their own share to evict it);
        QuotaExceeded when it does not fit under ``self.policy``. The portal's own blobs (owner
        PORTAL_OWNER: its page builds) are outside the quotas: never charged, never evicted."""
        policy = self.policy
        now = time.time()
        cutoff = now - policy.evict_min_age_s
        charge = len(content) + BLOB_OVERHEAD
        large = len(content) > policy.small_blob_bytes
        with self._lock:
            cur = self._conn.execute("UPDATE blobs SET created=? WHERE skylink=?", (now, skylink))
            if cur.rowcount:
                return
            if owner == PORTAL_OWNER:
                self._conn.execute("INSERT INTO blobs(skylink, content, size, created, owner) VALUES (?,?,?,?,?)",
                                   (skylink, content, len(content), now, owner))
                return
            if large and self._large + charge > policy.quota_bytes - policy.small_reserve_bytes:
                raise QuotaExceeded("the space for skyfiles over "
                                    f"{policy.small_blob_bytes} bytes is full; smaller ones are still accepted")
            share = min(policy.client_bytes, policy.quota_bytes)
            mine = self._by_owner.get(owner, 0)
            if mine + charge > share:
                self._evict(owner, mine + charge - share, cutoff)
                if self._by_owner.get(owner, 0) + charge > share:
                    raise QuotaExceeded(f"this client's share of the skyfile storage ({share} bytes) is "
                                        "full; try again after its older skyfiles expire")
            self._make_room(owner, charge, cutoff)
            if self._charged + charge > policy.quota_bytes:
                raise QuotaExceeded(f"{self._charged} of {policy.quota_bytes} bytes used")
            self._conn.execute("INSERT INTO blobs(skylink, content, size, created, owner) VALUES (?,?,?,?,?)",
                               (skylink, content, len(content), now, owner))
            self._account(owner, len(content), +1)

    def _make_room(self, owner: str, charge: int, cutoff: float) -> None:
        """Quota full: evict old blobs of clients holding more than ``owner`` will, heaviest first,
        then ``owner``'s own (lock held)."""
        need = self._charged + charge - self.policy.quota_bytes
        mine_after = self._by_owner.get(owner, 0) + charge
        exhausted: set[str] = {owner}
        while need > 0:
            candidates = [(held, who) for who, held in self._by_owner.items()
                          if held > mine_after and who not in exhausted]
            if not candidates:  # nobody holds more: the uploader gives way itself
                self._evict(owner, need, cutoff)
                return
            held, heaviest = max(candidates)
            freed = self._evict(heaviest, min(need, held - mine_after), cutoff)
            if freed == 0:
                exhausted.add(heaviest)  # everything it holds is younger than the minimum age
            need -= freed

    def _evict(self, owner: str, need: int, cutoff: float) -> int:
        """Delete ``owner``'s oldest blobs created before ``cutoff`` until ``need`` charged bytes are
        freed (lock held); returns the bytes freed."""
        freed = 0
        while freed < need:
            rows = self._conn.execute(
                "SELECT skylink, size FROM blobs WHERE owner=? AND created < ? ORDER BY created LIMIT 64",
                (owner, cutoff)).fetchall()
            if not rows:
                break
            victims: list[str] = []
            for skylink, size in rows:
                victims.append(skylink)
                freed += int(size) + BLOB_OVERHEAD
                self._account(owner, -int(size), -1)
                if freed >= need:
                    break
            self._conn.executemany("DELETE FROM blobs WHERE skylink=?", [(v,) for v in victims])
        return freed

    def _account(self, owner: str, size: int, count: int) -> None:
        charge = size + count * BLOB_OVERHEAD
        self._used += size
        self._charged += charge
        if abs(size) > self.policy.small_blob_bytes:
            self._large += charge
        held = self._by_owner.get(owner, 0) + charge
        if held > 0:
            self._by_owner[owner] = held
        else:
            self._by_owner.pop(owner, None)

    def _recount(self) -> None:
        """Rebuild the in-memory totals from the table (at open and after expiry)."""
        small = self.policy.small_blob_bytes
        rows = self._conn.execute(
            "SELECT owner, SUM(size), COUNT(*), SUM(CASE WHEN size > ? THEN size + ? ELSE 0 END) "
            "FROM blobs WHERE owner != ? GROUP BY owner", (small, BLOB_OVERHEAD, PORTAL_OWNER)).fetchall()
        self._by_owner = {str(owner): int(size) + int(count) * BLOB_OVERHEAD for owner, size, count, _ in rows}
        self._used = sum(int(r[1]) for r in rows)
        self._charged = sum(self._by_owner.values())
        self._large = sum(int(r[3]) for r in rows)

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
            removed = self._conn.execute("DELETE FROM blobs WHERE created < ?", (cutoff,)).rowcount
            if removed:
                self._recount()
            return removed

    @property
    def used_bytes(self) -> int:
        """Content bytes of clients' skyfiles (without the per-blob overhead the quotas also count, and
        without the portal's own page builds)."""
        return self._used

    def client_bytes(self, owner: str) -> int:
        """What ``owner`` holds, as the quotas count it."""
        return self._by_owner.get(owner, 0)
