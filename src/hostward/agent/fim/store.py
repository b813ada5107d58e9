"""The FIM baseline in SQLite: one row per recorded path (paths as BLOBs, so any byte string works).

Schema (``PRAGMA user_version`` = 2):

- ``entries``  path BLOB PK, statkey (inode, size, mtime, ctime, mode, uid, gid packed), sha256 (32 raw
               bytes), flags, xattrs, target, error; WITHOUT ROWID
- ``racy``     paths whose timestamps are too close to when they were recorded (rehash next time)
- ``roots``    the monitored roots the baseline was built for (the standalone CLI checks these)
- ``meta``     key/value (created_at, updated_at in ns)

A new baseline is written into a temporary file with journaling off and renamed over the old one, so a
crash leaves the previous baseline intact; updates after a check are one transaction in WAL mode. Forked
scans (the CLI) write part files beside it (``write_part``: the same columns, no index) that the writer
merges in SQL, and read the recorded keys of a subtree from a connection of their own (``keys_reader``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

from hostward.agent.errors import AgentError
from hostward.agent.fim.config import WatchRoot
from hostward.agent.fim.model import KEY, Row, stat_key, unpack_stat_key

SCHEMA_VERSION = 2
PAGE_SIZE = 16384  # of a new baseline and of part files (any page size reads the same)
# The seven stat fields live in one packed BLOB (``scan.stat_key``): a quick check loads just that per
# path, and binding/reading 7 columns instead of 13 makes writing and loading a baseline much cheaper.
_COLUMNS = "path, statkey, sha256, flags, xattrs, target, error"
_SELECT = f"SELECT {_COLUMNS} FROM entries"
_INSERT = f"INSERT OR REPLACE INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_SCHEMA = (
    """CREATE TABLE entries (path BLOB PRIMARY KEY, statkey BLOB NOT NULL, sha256 BLOB, flags INTEGER,
        xattrs BLOB, target BLOB, error TEXT) WITHOUT ROWID""",
    "CREATE TABLE racy (path BLOB PRIMARY KEY) WITHOUT ROWID",
    """CREATE TABLE roots (path BLOB PRIMARY KEY, recursive INTEGER NOT NULL, important INTEGER NOT NULL,
        ignore TEXT NOT NULL, operations TEXT NOT NULL, baselined_ns INTEGER) WITHOUT ROWID""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)


def _stored(rows: Iterable[Row]) -> Iterator[tuple[object, ...]]:
    for r in rows:
        yield (r[0], stat_key(r), r[8], r[9], r[10], r[11], r[12])


def _row(stored: tuple) -> Row:
    path, key, sha, flags, xattrs, target, error = stored
    ino, size, mtime, ctime, mode, uid, gid = unpack_stat_key(key)
    return (path, mode, uid, gid, size, ino, mtime, ctime, sha, flags, xattrs, target, error)


class BaselineError(AgentError):
    """The baseline database is missing, unreadable or from an unknown schema."""

    code = "fim_baseline_error"


def _prefix_bounds(path: bytes) -> tuple[bytes, bytes]:
    # Every descendant of ``path`` sorts in [path + "/", path + "0") since "0" follows "/" in ASCII.
    base = path.rstrip(b"/")
    return base + b"/", base + b"0"


# A part file keeps the usual row (no xattrs, no target, no error) in three columns: ``v`` is the stat key
# followed by the digest, if any. Binding three values instead of seven makes writing a part about half
# as expensive; ``merge_part`` splits ``v`` again in SQL. Other rows go to ``rest`` as they are stored.
_PART_SCHEMA = (
    "CREATE TABLE plain (path BLOB, v BLOB, flags INTEGER)",
    "CREATE TABLE rest (path BLOB, statkey BLOB, sha256 BLOB, flags INTEGER, xattrs BLOB, target BLOB, "
    "error TEXT)",
)
_KEY_LEN = KEY.size
_MERGE = (
    f"INSERT OR REPLACE INTO entries ({_COLUMNS}) "
    f"SELECT path, substr(v, 1, {_KEY_LEN}), CASE WHEN length(v) > {_KEY_LEN} THEN substr(v, {_KEY_LEN + 1}) "
    f"END, flags, NULL, NULL, NULL FROM part.plain UNION ALL SELECT {_COLUMNS} FROM part.rest"
)


def part_prefix(owner: int) -> str:
    """File name prefix of the part files written for the scan run by process ``owner``."""
    return f".fim-part.{owner}."


# Plain rows go in by statements of this many rows each (multi-row VALUES): a third cheaper than one
# statement per row, which is most of what writing a part costs.
_PLAIN_ROWS = 256
_INSERT_PLAIN = "INSERT INTO plain VALUES (?, ?, ?)"
_INSERT_PLAIN_ROWS = "INSERT INTO plain VALUES " + ", ".join(["(?, ?, ?)"] * _PLAIN_ROWS)


def write_part(directory: str, rows: list[Row], owner: int) -> str:
    """Write ``rows`` to a new part file in ``directory`` (forked scans); returns its path."""
    pack = KEY.pack
    plain: list[object] = []  # flat: path, v, flags, path, v, flags, ...
    rest = []
    for r in rows:
        if r[10] is None and r[11] is None and r[12] is None:
            key = pack(r[5], r[4], r[6], r[7], r[1], r[2], r[3])
            plain += (r[0], key if r[8] is None else key + r[8], r[9])
        else:
            rest.append(r)
    fd, part = tempfile.mkstemp(prefix=part_prefix(owner), suffix=".tmp", dir=directory)
    os.close(fd)
    conn = sqlite3.connect(part, isolation_level=None)
    try:
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for sql in _PART_SCHEMA:
            conn.execute(sql)
        step = 3 * _PLAIN_ROWS
        whole = len(plain) - len(plain) % step
        for i in range(0, whole, step):
            conn.execute(_INSERT_PLAIN_ROWS, plain[i : i + step])
        conn.executemany(_INSERT_PLAIN, (plain[i : i + 3] for i in range(whole, len(plain), 3)))
        conn.executemany("INSERT INTO rest VALUES (?, ?, ?, ?, ?, ?, ?)", _stored(rest))
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        os.unlink(part)
        raise
    conn.close()
    return part


def keys_reader(path: Path | str) -> Callable[[bytes], dict[bytes, bytes]]:
    """For a forked child: ``keys_under(directory)`` -> {path: stat key} of the directory and everything
    below it, read through a read-only connection the child opens on first use (never one made before
    the fork)."""
    uri = f"file:{quote(os.fspath(path))}?mode=ro"
    conn: list[sqlite3.Connection] = []

    def keys_under(directory: bytes) -> dict[bytes, bytes]:
        if not conn:
            conn.append(sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10.0))
        lo, hi = _prefix_bounds(directory)
        cur = conn[0].execute(
            "SELECT path, statkey FROM entries WHERE path = ? OR (path >= ? AND path < ?)",
            (directory, lo, hi),
        )
        return dict(cur)

    return keys_under


def _connect(path: Path | str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, timeout=10.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class BaselineWriter:
    """A new baseline written while the scan still runs: ``add`` batches, then ``finish`` renames it
    over the old file (nothing replaces the old baseline unless ``finish`` is reached)."""

    def __init__(self, path: Path | str, roots: Sequence[WatchRoot]) -> None:
        self.path = Path(path)
        self.directory = self.path.parent if str(self.path.parent) else Path(".")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.directory)
        os.close(fd)
        os.chmod(tmp, 0o600)
        self.tmp = tmp
        self.part_dir = str(self.directory)
        self._conn: sqlite3.Connection | None = _connect(tmp)
        conn = self._conn
        # Larger pages: a quarter less B-tree work when the parts of a forked scan are merged in.
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: merged parts do not push pages out again
        conn.execute("BEGIN")
        for sql in _SCHEMA:
            conn.execute(sql)
        BaselineStore(tmp, conn)._put_roots(roots)

    def add(self, rows: Iterable[Row]) -> None:
        # sqlite3 releases the GIL while it inserts, so this overlaps with the hashing threads.
        assert self._conn is not None
        self._conn.executemany(_INSERT, _stored(rows))

    def merge_part(self, part: str) -> None:
        """Copy the rows of a part file (``write_part``) into the new baseline, in SQL."""
        conn = self._conn
        assert conn is not None
        # ATTACH may happen inside the transaction, DETACH may not: commit around it (journaling is off,
        # so a commit only hands the written pages to the OS).
        conn.execute("ATTACH DATABASE ? AS part", (part,))
        try:
            conn.execute(_MERGE)
        finally:
            conn.execute("COMMIT")
            conn.execute("DETACH DATABASE part")
            conn.execute("BEGIN")

    def finish(self, racy: Iterable[bytes]) -> BaselineStore:
        conn = self._conn
        assert conn is not None
        conn.executemany("INSERT INTO racy (path) VALUES (?)", ((p,) for p in sorted(racy)))
        now = str(time.time_ns())
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)", (("created_ns", now), ("updated_ns", now))
        )
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
        conn.close()
        self._conn = None
        os.replace(self.tmp, self.path)
        # fsync the directory so the rename survives a crash.
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return BaselineStore.open(self.path, create=False)

    def abort(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> BaselineWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self.abort()


class BaselineStore:
    """Read and write one baseline file. Callers serialise access (the engine holds a lock)."""

    def __init__(self, path: Path | str, conn: sqlite3.Connection) -> None:
        self.path = Path(path)
        self._conn = conn

    # ---- opening --------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True) -> BaselineStore:
        """Open ``path``; with ``create`` an empty baseline is made when it does not exist."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise BaselineError(f"{path}: no baseline (run init first)")
            return cls.write_new(path, [], [], set())
        try:
            conn = _connect(path)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise BaselineError(f"{path}: not a baseline database ({exc})") from exc
        if version != SCHEMA_VERSION:
            conn.close()
            raise BaselineError(f"{path}: baseline schema {version}, this version reads {SCHEMA_VERSION}")
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # read-only location: reading still works
        return cls(path, conn)

    @classmethod
    def write_new(
        cls, path: Path | str, roots: Sequence[WatchRoot], rows: Iterable[Row], racy: Iterable[bytes]
    ) -> BaselineStore:
        """Write a complete baseline to a temporary file and rename it over ``path``."""
        with BaselineWriter(path, roots) as writer:
            writer.add(rows)
            return writer.finish(racy)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> BaselineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading --------------------------------------------------------------------------------

    def load(self) -> dict[bytes, Row]:
        """Every recorded path -> row (tuples in ``Entry`` order)."""
        return {r[0]: _row(r) for r in self._conn.execute(_SELECT)}

    def load_under(self, path: bytes) -> dict[bytes, Row]:
        """``path`` and everything recorded below it."""
        lo, hi = _prefix_bounds(path)
        cur = self._conn.execute(f"{_SELECT} WHERE path = ? OR (path >= ? AND path < ?)", (path, lo, hi))
        return {r[0]: _row(r) for r in cur}

    def load_keys(self) -> dict[bytes, bytes]:
        """Every recorded path -> its stat key (what a quick check needs, and nothing more)."""
        return dict(self._conn.execute("SELECT path, statkey FROM entries"))

    def get_many(self, paths: Iterable[bytes]) -> dict[bytes, Row]:
        """Rows of the given paths that are recorded."""
        out: dict[bytes, Row] = {}
        wanted = list(paths)
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            q = f"{_SELECT} WHERE path IN ({','.join('?' * len(chunk))})"
            out.update((r[0], _row(r)) for r in self._conn.execute(q, chunk))
        return out

    def key(self, path: bytes) -> bytes | None:
        """The recorded stat key of ``path`` (None when not recorded)."""
        found = self._conn.execute("SELECT statkey FROM entries WHERE path = ?", (path,)).fetchone()
        return None if found is None else bytes(found[0])

    def paths_outside(self, subtrees: list[bytes]) -> set[bytes]:
        """Recorded paths that are neither one of ``subtrees`` nor below one (one range query per gap)."""
        spans: list[tuple[bytes, bytes]] = []
        for d in subtrees:
            lo, hi = _prefix_bounds(d)
            spans += [(d, d + b"\0"), (lo, hi)]
        spans.sort()
        out: set[bytes] = set()
        q = self._conn.execute
        gap_from = b""  # the empty string sorts first: the first gap starts at the beginning
        for lo, hi in spans:
            if lo > gap_from:
                out.update(
                    r[0] for r in q("SELECT path FROM entries WHERE path >= ? AND path < ?", (gap_from, lo))
                )
            gap_from = max(gap_from, hi)
        out.update(r[0] for r in q("SELECT path FROM entries WHERE path >= ?", (gap_from,)))
        return out

    def reader(self) -> Callable[[bytes], dict[bytes, bytes]]:
        """``keys_reader`` for this baseline file (forked quick checks)."""
        return keys_reader(self.path)

    def get(self, path: bytes) -> Row | None:
        found = self._conn.execute(f"{_SELECT} WHERE path = ?", (path,)).fetchone()
        return None if found is None else _row(found)

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def count_errors(self) -> int:
        """Entries whose content could not be read (``error`` set)."""
        return int(self._conn.execute("SELECT COUNT(*) FROM entries WHERE error IS NOT NULL").fetchone()[0])

    def racy(self) -> set[bytes]:
        return {r[0] for r in self._conn.execute("SELECT path FROM racy")}

    def roots(self) -> list[WatchRoot]:
        out = []
        for path, recursive, important, ignore, operations, _ in self._conn.execute(
            "SELECT path, recursive, important, ignore, operations, baselined_ns FROM roots ORDER BY path"
        ):
            out.append(
                WatchRoot(
                    bytes(path),
                    bool(recursive),
                    bool(important),
                    tuple(json.loads(ignore)),
                    frozenset(json.loads(operations)),
                )
            )
        return out

    def baselined_roots(self) -> set[bytes]:
        cur = self._conn.execute("SELECT path FROM roots WHERE baselined_ns IS NOT NULL")
        return {bytes(r[0]) for r in cur}

    def meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # ---- writing --------------------------------------------------------------------------------

    def _put_roots(self, roots: Sequence[WatchRoot], baselined_ns: int | None = None) -> None:
        now = time.time_ns() if baselined_ns is None else baselined_ns
        self._conn.executemany(
            "INSERT OR REPLACE INTO roots (path, recursive, important, ignore, operations, baselined_ns) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    r.path,
                    int(r.recursive),
                    int(r.important),
                    json.dumps(list(r.ignore)),
                    json.dumps(sorted(r.operations)),
                    now,
                )
                for r in roots
            ],
        )

    def apply(
        self,
        upserts: Iterable[Row],
        deletes: Iterable[bytes] = (),
        *,
        delete_under: Iterable[bytes] = (),
        racy_add: Iterable[bytes] = (),
        racy_drop: Iterable[bytes] = (),
        roots: Sequence[WatchRoot] | None = None,
        drop_roots: Iterable[bytes] = (),
    ) -> None:
        """One transaction: upsert rows, delete paths (and whole subtrees), update racy marks and roots."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for path in delete_under:
                lo, hi = _prefix_bounds(path)
                conn.execute("DELETE FROM entries WHERE path = ? OR (path >= ? AND path < ?)", (path, lo, hi))
            conn.executemany("DELETE FROM entries WHERE path = ?", ((p,) for p in deletes))
            conn.executemany(_INSERT, _stored(upserts))
            conn.executemany("DELETE FROM racy WHERE path = ?", ((p,) for p in racy_drop))
            conn.executemany("INSERT OR IGNORE INTO racy (path) VALUES (?)", ((p,) for p in racy_add))
            conn.executemany("DELETE FROM roots WHERE path = ?", ((p,) for p in drop_roots))
            if roots:
                self._put_roots(roots)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('updated_ns', ?)", (str(time.time_ns()),)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def iter_paths(self) -> Iterator[bytes]:
        for (path,) in self._conn.execute("SELECT path FROM entries"):
            yield bytes(path)
