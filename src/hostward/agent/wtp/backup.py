"""Content-addressed local backups: sha256-named blobs plus a manifest of path → hash, mode, owner.

Shared by web tamper protection (one live manifest, refreshed after privileged changes) and the
ransomware snapshots (one manifest per snapshot). Blobs are written to a temporary name and renamed,
so a crash or a full disk never leaves a blob whose name lies about its content.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from hostward.agent.errors import AgentError

_CHUNK = 1024 * 1024


class BackupError(AgentError):
    code = "backup_failed"


class BackupDiskFull(BackupError):
    """The backup filesystem is full (ENOSPC / EDQUOT)."""

    code = "backup_disk_full"


@dataclass(frozen=True)
class Entry:
    """One backed-up path: ``kind`` is file, dir or symlink; ``sha256`` is set for files."""

    kind: str
    mode: int
    uid: int
    gid: int
    sha256: str = ""
    size: int = 0
    target: str = ""


def _space_error(exc: OSError, where: str) -> BackupError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BackupDiskFull(f"backup disk full at {where}: {os.strerror(exc.errno)}")
    return BackupError(f"backup failed at {where}: {exc.strerror or exc}")


def hash_file(path: str) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


class BlobStore:
    """``root/blobs/ab/abcdef...``: each distinct content stored once."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.blobs = os.path.join(root, "blobs")
        try:
            os.makedirs(self.blobs, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise _space_error(exc, self.blobs) from exc

    def path(self, sha: str) -> str:
        return os.path.join(self.blobs, sha[:2], sha)

    def has(self, sha: str) -> bool:
        return os.path.exists(self.path(sha))

    def put_file(self, src: str) -> tuple[str, int]:
        """Store the content of ``src``; returns (sha256, size)."""
        h = hashlib.sha256()
        size = 0
        tmpdir = os.path.join(self.root, "tmp")
        try:
            os.makedirs(tmpdir, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=tmpdir)
        except OSError as exc:
            raise _space_error(exc, tmpdir) from exc
        try:
            with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
                while chunk := fin.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    fout.write(chunk)
            sha = h.hexdigest()
            dest = self.path(sha)
            os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
            if os.path.exists(dest):
                os.unlink(tmp)
            else:
                os.replace(tmp, dest)
            return sha, size
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if exc.filename == src or exc.filename2 == src:
                raise
            raise _space_error(exc, self.root) from exc

    def read(self, sha: str) -> bytes:
        with open(self.path(sha), "rb") as f:
            return f.read()

    def gc(self, keep: set[str]) -> int:
        """Delete blobs not in ``keep``; returns how many."""
        removed = 0
        for sub in os.listdir(self.blobs):
            d = os.path.join(self.blobs, sub)
            for name in os.listdir(d):
                if name not in keep:
                    os.unlink(os.path.join(d, name))
                    removed += 1
        return removed


Manifest = dict[str, Entry]


def walk(top: str, excluded: Callable[[str], bool]) -> Iterator[tuple[str, os.stat_result]]:
    """``top`` and everything below it that is not excluded (symlinks not followed)."""
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            continue
        yield d, st
        if not stat.S_ISDIR(st.st_mode):
            continue
        try:
            names = sorted(os.listdir(d), reverse=True)
        except OSError:
            continue
        for name in names:
            p = os.path.join(d, name)
            if excluded(p):
                continue
            try:
                cst = os.lstat(p)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(cst.st_mode):
                stack.append(p)
            else:
                yield p, cst


def capture(store: BlobStore, top: str, excluded: Callable[[str], bool]) -> Manifest:
    """Back up ``top``: files into ``store``, everything into the returned manifest."""
    manifest: Manifest = {}
    for path, st in walk(top, excluded):
        meta = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if stat.S_ISDIR(st.st_mode):
            manifest[path] = Entry("dir", *meta)
        elif stat.S_ISLNK(st.st_mode):
            manifest[path] = Entry("symlink", *meta, target=os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            try:
                sha, size = store.put_file(path)
            except FileNotFoundError:
                continue  # vanished since the walk saw it: nothing to protect
            manifest[path] = Entry("file", *meta, sha256=sha, size=size)
        # sockets, FIFOs and devices are not web content: left alone
    return manifest


def save_manifest(path: str, manifest: Manifest, extra: dict[str, object] | None = None) -> None:
    data = {"entries": {p: asdict(e) for p, e in manifest.items()}, **(extra or {})}
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise _space_error(exc, path) from exc


def load_manifest(path: str) -> tuple[Manifest, dict[str, object]]:
    with open(path) as f:
        data = json.load(f)
    entries = {p: Entry(**e) for p, e in data.pop("entries").items()}
    return entries, data


def write_entry(store: BlobStore, path: str, entry: Entry, tmp_prefix: str = ".hw-restore-") -> None:
    """Put ``entry`` back at ``path`` (content, mode, owner); the caller has unlocked the parent."""
    parent = os.path.dirname(path)
    if entry.kind == "dir":
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(path)
                os.mkdir(path, entry.mode)
        except FileNotFoundError:
            os.mkdir(path, entry.mode)
    elif entry.kind == "symlink":
        tmp = os.path.join(parent, f"{tmp_prefix}{os.urandom(6).hex()}")
        os.symlink(entry.target, tmp)
        os.replace(tmp, path)
        os.lchown(path, entry.uid, entry.gid)
        return
    else:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=tmp_prefix)
        try:
            with open(store.path(entry.sha256), "rb") as fin, os.fdopen(fd, "wb") as fout:
                while chunk := fin.read(_CHUNK):
                    fout.write(chunk)
                fout.flush()
            os.chown(tmp, entry.uid, entry.gid)
            os.chmod(tmp, entry.mode)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return
    os.chown(path, entry.uid, entry.gid)
    os.chmod(path, entry.mode)


def matches(path: str, entry: Entry) -> bool:
    """Whether ``path`` on disk has the content and metadata of ``entry``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (entry.mode, entry.uid, entry.gid):
        return False
    if entry.kind == "dir":
        return stat.S_ISDIR(st.st_mode)
    if entry.kind == "symlink":
        return stat.S_ISLNK(st.st_mode) and os.readlink(path) == entry.target
    if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
        return False
    try:
        return hash_file(path) == entry.sha256
    except OSError:
        return False


def hold(path: str, area_root: str, unlock: Callable[[str], None]) -> str:
    """Move ``path`` (a file or a whole tree, unlocked first) to a new folder under ``area_root``."""
    area = os.path.join(area_root, str(time.time_ns()))
    os.makedirs(area, mode=0o700, exist_ok=True)
    if os.path.isdir(path) and not os.path.islink(path):
        for p, st in walk(path, lambda _p: False):
            if not stat.S_ISLNK(st.st_mode):
                unlock(p)
    dest = os.path.join(area, os.path.basename(path))
    shutil.move(path, dest)
    return dest
