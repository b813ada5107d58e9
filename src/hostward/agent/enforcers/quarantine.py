"""Quarantine vault: isolate a malicious file, restore it with its owner and mode, or delete it for good.

Layout (root-only, 0700) under ``<state_dir>/quarantine``::

    ledger.db           SQLite ledger: one row per isolation (original path, owner, mode, hash, times)
    blobs/ab/<sha256>   the content, neutralised: b"HWQ1" + XOR(gzip(content)), file mode 0000
    tmp/                blobs being written

Isolating reads the file once through a descriptor opened with ``O_NOFOLLOW`` (hashing and writing the
neutralised blob in the same pass), fsyncs the blob, checks that the path still names the same inode
and unlinks it: a move that works across file systems and never leaves the file executable, greppable
or at its original path. The content is compressed then XORed, so neither the bytes nor a single-byte
XOR of them appear in the vault (a YARA scan of the vault finds nothing).

It refuses, before touching anything: non-regular files; the agent's own files (its code, virtual
environment, interpreter and state directory); files of a package-manager transaction in progress
(dpkg's lock held and the file owned by a package or a ``.dpkg-*`` temporary; retry later); anything
the injected whitelist predicate accepts.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import sqlite3
import stat
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from hostward.agent.errors import AgentError
from hostward.agent.state.db import ensure_private_dir, open_db
from hostward.core.clock import Clock, SystemClock
from hostward.core.ids import new_id

MAGIC = b"HWQ1"
_KEY = bytes.fromhex("5ac3e1179b2f46d08c7e31a4f20d95b6")
_CHUNK = 1024 * 1024
DPKG_LOCK = Path("/var/lib/dpkg/lock-frontend")
DPKG_INFO = Path("/var/lib/dpkg/info")
DPKG_TEMP_SUFFIXES = (".dpkg-new", ".dpkg-tmp", ".dpkg-dist", ".dpkg-old", ".dpkg-bak")
DEFAULT_RETENTION = timedelta(days=90)

_MIGRATIONS = [
    (
        1,
        [
            """CREATE TABLE isolated (
                id TEXT PRIMARY KEY,
                sha256 TEXT NOT NULL,
                original_path BLOB NOT NULL,
                uid INTEGER NOT NULL,
                gid INTEGER NOT NULL,
                mode INTEGER NOT NULL,
                size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL,
                isolated_at TEXT NOT NULL,
                expires_at TEXT,
                alarm_id TEXT,
                status TEXT NOT NULL,
                restored_at TEXT,
                deleted_at TEXT,
                detail TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX isolated_sha ON isolated (sha256)",
            "CREATE INDEX isolated_status ON isolated (status)",
        ],
    )
]


class QuarantineError(AgentError):
    code = "quarantine_error"


class IsolationRefused(QuarantineError):
    """The vault will not isolate (or restore) this file; ``reason`` is stable, ``retryable`` says if
    trying again later may work (a package transaction in progress)."""

    code = "isolation_refused"

    def __init__(self, message: str, *, reason: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class IsolatedFile:
    id: str
    sha256: str
    original_path: str
    uid: int
    gid: int
    mode: int
    size: int
    mtime_ns: int
    isolated_at: datetime
    expires_at: datetime | None
    alarm_id: str | None
    status: str  # isolated | restored | deleted
    restored_at: datetime | None
    deleted_at: datetime | None
    detail: str

    def as_dict(self) -> dict[str, object]:
        """For records sent to the manager (``Isolated Files``)."""
        return {
            "id": self.id,
            "sha256": self.sha256,
            "original_path": self.original_path,
            "uid": self.uid,
            "gid": self.gid,
            "mode": f"{stat.S_IMODE(self.mode):04o}",
            "size": self.size,
            "isolated_at": self.isolated_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "alarm_id": self.alarm_id,
            "status": self.status,
            "restored_at": self.restored_at.isoformat() if self.restored_at else None,
            "deleted_at": self.deleted_at.isoformat() if self.deleted_at else None,
        }


@dataclass(frozen=True)
class IsolationPlan:
    """What ``isolate`` will do, rendered before doing it (STYLE §8)."""

    path: str
    size: int
    uid: int
    gid: int
    mode: int
    vault: str

    def render(self) -> str:
        return (
            f"read {self.path} ({self.size} bytes, uid {self.uid}, gid {self.gid}, "
            f"mode {stat.S_IMODE(self.mode):04o}) through O_NOFOLLOW; write gzip+XOR blob into "
            f"{self.vault}/blobs (mode 0000), fsync; unlink {self.path} if it is still the same inode"
        )


Whitelist = Callable[[str, str], bool]  # (path, sha256) -> True when whitelisted
PackageOwner = Callable[[str], bool]  # path -> True when a package owns it


def agent_protected_paths(state_dir: Path | str | None = None) -> tuple[str, ...]:
    """The agent's own files: its package, virtual environment, interpreter and state directory."""
    paths = {str(Path(__file__).resolve().parents[2]), os.path.realpath(sys.executable)}
    if sys.prefix != sys.base_prefix:
        paths.add(os.path.realpath(sys.prefix))
    if state_dir is not None:
        paths.add(os.path.realpath(state_dir))
    return tuple(sorted(paths))


def dpkg_lock_held(lock: Path = DPKG_LOCK) -> bool:
    """True while a process holds dpkg's front-end lock (tested with F_GETLK, never taken)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        # struct flock: l_type, l_whence, l_start, l_len, l_pid, padded to its native 32 bytes
        query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0).ljust(32, b"\0")
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        return struct.unpack_from("h", answer)[0] != fcntl.F_UNLCK
    except OSError:
        return False
    finally:
        os.close(fd)


def dpkg_owns(path: str, info_dir: Path = DPKG_INFO) -> bool:
    """True when a dpkg ``.list`` file names ``path`` (read only while a transaction is running)."""
    wanted = os.fsencode(path)
    try:
        lists = [p for p in info_dir.iterdir() if p.suffix == ".list"]
    except OSError:
        return False
    for lst in lists:
        try:
            with open(lst, "rb") as fh:
                for line in fh:
                    if line.rstrip(b"\n") == wanted:
                        return True
        except OSError:
            continue
    return False


def _xor(data: bytes, offset: int) -> bytes:
    if not data:
        return data
    start = offset % len(_KEY)
    reps = (start + len(data)) // len(_KEY) + 1
    stream = (_KEY * reps)[start : start + len(data)]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(len(data), "little")


def _within(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class QuarantineVault:
    """The vault and its ledger. Safe to share between threads (one lock around every operation)."""

    def __init__(
        self,
        root: Path | str,
        *,
        protected: Iterable[str] = (),
        whitelist: Whitelist | None = None,
        package_owner: PackageOwner = dpkg_owns,
        package_busy: Callable[[], bool] = dpkg_lock_held,
        retention: timedelta | None = DEFAULT_RETENTION,
        clock: Clock | None = None,
    ) -> None:
        self.root = Path(root)
        ensure_private_dir(self.root)
        for sub in ("blobs", "tmp"):
            ensure_private_dir(self.root / sub)
        # the agent's own files are always protected; ``protected`` adds more (the state dir, ...)
        self.protected = tuple(
            sorted(
                {os.path.realpath(p) for p in protected}
                | set(agent_protected_paths())
                | {os.path.realpath(self.root)}
            )
        )
        self.whitelist = whitelist
        self.package_owner = package_owner
        self.package_busy = package_busy
        self.retention = retention
        self.clock = clock or SystemClock()
        self._db: sqlite3.Connection = open_db(self.root / "ledger.db", _MIGRATIONS)
        self._lock = threading.RLock()

    # ---- checks ---------------------------------------------------------------------------------

    def _check_path(self, path: str) -> str:
        if not os.path.isabs(path):
            raise IsolationRefused(f"{path}: not an absolute path", reason="not_absolute")
        real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        if _within(real, self.protected) or _within(path, self.protected):
            raise IsolationRefused(f"{path}: belongs to the agent itself", reason="agent_file")
        if self.package_busy() and (path.endswith(DPKG_TEMP_SUFFIXES) or self.package_owner(real)):
            raise IsolationRefused(
                f"{path}: a package-manager transaction is in progress and the file is part of a package",
                reason="package_transaction",
                retryable=True,
            )
        return real

    def plan(self, path: str | Path) -> IsolationPlan:
        """What isolating ``path`` would do (raises ``IsolationRefused`` when it would refuse)."""
        spath = os.path.abspath(os.fspath(path))
        self._check_path(spath)
        try:
            st = os.lstat(spath)
        except OSError as exc:
            raise QuarantineError(f"{spath}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise IsolationRefused(f"{spath}: not a regular file", reason="not_regular")
        return IsolationPlan(spath, st.st_size, st.st_uid, st.st_gid, st.st_mode, str(self.root))

    # ---- isolate ----------------------------------------------------------------------------------

    def isolate(
        self, path: str | Path, *, alarm_id: str | None = None, expected_sha256: str | None = None
    ) -> IsolatedFile:
        """Move ``path`` into the vault; returns the ledger entry."""
        spath = os.path.abspath(os.fspath(path))
        with self._lock:
            self._check_path(spath)
            try:
                fd = os.open(spath, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
            except FileNotFoundError as exc:
                raise QuarantineError(f"{spath}: no such file") from exc
            except OSError as exc:
                raise IsolationRefused(
                    f"{spath}: cannot open: {exc.strerror or exc}", reason="unreadable"
                ) from exc
            tmp: Path | None = None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise IsolationRefused(f"{spath}: not a regular file", reason="not_regular")
                tmp, sha = self._write_blob(fd)
                if expected_sha256 and sha != expected_sha256.lower():
                    raise IsolationRefused(f"{spath}: content changed since detection", reason="changed")
                if self.whitelist is not None and self.whitelist(spath, sha):
                    raise IsolationRefused(f"{spath}: on the whitelist", reason="whitelisted")
                after = os.fstat(fd)
                if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                    raise IsolationRefused(f"{spath}: modified while it was read", reason="changed")
                blob = self._blob_path(sha)
                blob.parent.mkdir(mode=0o700, exist_ok=True)
                if blob.exists():
                    tmp.unlink()
                else:
                    os.replace(tmp, blob)
                    _fsync_dir(blob.parent)
                tmp = None
                try:
                    now_st = os.lstat(spath)
                except FileNotFoundError:
                    now_st = None
                if now_st is None or (now_st.st_dev, now_st.st_ino) != (st.st_dev, st.st_ino):
                    self._release_blob(sha)
                    raise IsolationRefused(f"{spath}: replaced while it was being isolated", reason="changed")
                # the ledger row goes in before the unlink: a crash in between leaves a recorded copy
                # (and the original still in place), never a removed file without a record
                entry = self._record(spath, sha, st, alarm_id)
                try:
                    os.unlink(spath)
                except OSError as exc:
                    self._db.execute("DELETE FROM isolated WHERE id=?", (entry.id,))
                    self._release_blob(sha)
                    raise QuarantineError(f"{spath}: cannot remove it: {exc.strerror or exc}") from exc
                _fsync_dir(Path(os.path.dirname(spath)))
            finally:
                os.close(fd)
                if tmp is not None and tmp.exists():
                    tmp.unlink()
            return entry

    def _record(self, spath: str, sha: str, st: os.stat_result, alarm_id: str | None) -> IsolatedFile:
        now = self.clock.now()
        entry = IsolatedFile(
            id=new_id(),
            sha256=sha,
            original_path=spath,
            uid=st.st_uid,
            gid=st.st_gid,
            mode=st.st_mode,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            isolated_at=now,
            expires_at=now + self.retention if self.retention else None,
            alarm_id=alarm_id,
            status="isolated",
            restored_at=None,
            deleted_at=None,
            detail="",
        )
        self._db.execute(
            "INSERT INTO isolated (id, sha256, original_path, uid, gid, mode, size, mtime_ns, isolated_at,"
            " expires_at, alarm_id, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                entry.id,
                sha,
                os.fsencode(spath),
                st.st_uid,
                st.st_gid,
                st.st_mode,
                st.st_size,
                st.st_mtime_ns,
                now.isoformat(),
                entry.expires_at.isoformat() if entry.expires_at else None,
                alarm_id,
                "isolated",
            ),
        )
        return entry

    def _blob_path(self, sha: str) -> Path:
        return self.root / "blobs" / sha[:2] / sha

    def _write_blob(self, fd: int) -> tuple[Path, str]:
        h = hashlib.sha256()
        tmp = self.root / "tmp" / new_id()
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            comp = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip container
            written = 0

            def emit(data: bytes) -> None:
                nonlocal written
                if data:
                    os.write(out, _xor(data, written))
                    written += len(data)

            os.write(out, MAGIC)
            offset = 0
            while True:
                chunk = os.pread(fd, _CHUNK, offset)
                if not chunk:
                    break
                offset += len(chunk)
                h.update(chunk)
                emit(comp.compress(chunk))
            emit(comp.flush())
            os.fchmod(out, 0)
            os.fsync(out)
        except BaseException:
            os.close(out)
            tmp.unlink(missing_ok=True)
            raise
        os.close(out)
        return tmp, h.hexdigest()

    def read_content(self, entry_id: str) -> bytes:
        """The original bytes of an isolated file (for analysis; never written back by this call)."""
        entry = self.get(entry_id)
        return self._decode(self._blob_path(entry.sha256))

    def _decode(self, blob: Path) -> bytes:
        raw = blob.read_bytes()
        if not raw.startswith(MAGIC):
            raise QuarantineError(f"{blob}: not a vault blob")
        return gzip.decompress(_xor(raw[len(MAGIC) :], 0))

    # ---- restore / delete -------------------------------------------------------------------------

    def restore(self, entry_id: str, *, force: bool = False) -> IsolatedFile:
        """Put the file back with its owner, group, mode and mtime (refuses when the path exists,
        unless ``force``; the process that ran it is not restarted)."""
        with self._lock:
            entry = self.get(entry_id)
            if entry.status != "isolated":
                raise QuarantineError(f"{entry_id}: {entry.status}, not isolated")
            target = entry.original_path
            parent = os.path.dirname(target)
            if not os.path.isdir(parent):
                raise QuarantineError(f"{target}: directory {parent} no longer exists")
            if os.path.lexists(target) and not force:
                raise IsolationRefused(f"{target}: a file exists there now (use force)", reason="exists")
            content = self._decode(self._blob_path(entry.sha256))
            if hashlib.sha256(content).hexdigest() != entry.sha256:
                raise QuarantineError(f"{entry_id}: vault content does not match its hash")
            tmp = os.path.join(parent, f".{os.path.basename(target)}.hwrestore-{entry.id[:8]}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(content)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fchown(fd, entry.uid, entry.gid)
                os.fchmod(fd, stat.S_IMODE(entry.mode))  # after chown, which clears set-id bits
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(tmp)
                raise
            os.close(fd)
            os.replace(tmp, target)
            _fsync_dir(Path(parent))
            now = self.clock.now()
            self._db.execute(
                "UPDATE isolated SET status='restored', restored_at=? WHERE id=?", (now.isoformat(), entry.id)
            )
            self._release_blob(entry.sha256)
            return self.get(entry.id)

    def delete(self, entry_id: str) -> IsolatedFile:
        """Remove the isolated content for good (the ledger keeps the record)."""
        with self._lock:
            entry = self.get(entry_id)
            if entry.status != "isolated":
                raise QuarantineError(f"{entry_id}: {entry.status}, not isolated")
            self._db.execute(
                "UPDATE isolated SET status='deleted', deleted_at=? WHERE id=?",
                (self.clock.now().isoformat(), entry.id),
            )
            self._release_blob(entry.sha256)
            return self.get(entry.id)

    def purge_expired(self) -> list[IsolatedFile]:
        """Delete isolated files past their retention; returns the entries deleted."""
        now = self.clock.now().isoformat()
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM isolated WHERE status='isolated' AND expires_at IS NOT NULL"
                    " AND expires_at <= ?",
                    (now,),
                )
            ]
            return [self.delete(i) for i in ids]

    def _release_blob(self, sha: str) -> None:
        left = self._db.execute(
            "SELECT count(*) FROM isolated WHERE sha256=? AND status='isolated'", (sha,)
        ).fetchone()[0]
        if left == 0:
            self._blob_path(sha).unlink(missing_ok=True)

    # ---- ledger -----------------------------------------------------------------------------------

    def get(self, entry_id: str) -> IsolatedFile:
        with self._lock:
            row = self._db.execute("SELECT * FROM isolated WHERE id=?", (entry_id,)).fetchone()
        if row is None:
            raise QuarantineError(f"no isolated file {entry_id}")
        return self._entry(row)

    def list(self, status: str | None = None) -> list[IsolatedFile]:
        with self._lock:
            if status is None:
                rows = self._db.execute("SELECT * FROM isolated ORDER BY isolated_at").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM isolated WHERE status=? ORDER BY isolated_at", (status,)
                ).fetchall()
        return [self._entry(r) for r in rows]

    @staticmethod
    def _entry(row: sqlite3.Row) -> IsolatedFile:
        return IsolatedFile(
            id=row["id"],
            sha256=row["sha256"],
            original_path=os.fsdecode(bytes(row["original_path"])),
            uid=row["uid"],
            gid=row["gid"],
            mode=row["mode"],
            size=row["size"],
            mtime_ns=row["mtime_ns"],
            isolated_at=_dt(row["isolated_at"]) or datetime.min,
            expires_at=_dt(row["expires_at"]),
            alarm_id=row["alarm_id"],
            status=row["status"],
            restored_at=_dt(row["restored_at"]),
            deleted_at=_dt(row["deleted_at"]),
            detail=row["detail"],
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
