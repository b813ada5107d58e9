"""The manager's copy of a server's WTP backup: content-addressed blobs plus the agent's manifest.

Layout: ``<data_dir>/wtp-backup/<server_id>/blobs/<sha[:2]>/<sha>`` and ``.../manifest.json``. Each
server sees only its own directory (the server id comes from the agent's credential, never from the
request). A blob is stored only when its content hashes to the name it was sent under; it is written
to a temporary file and renamed, so a reader never sees half a blob. Blobs are capped by the agent
channel's body limit, and a server's whole copy by ``MAX_SERVER_BYTES``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from hostward.core.errors import HostwardError, Invalid, NotFound

MAX_SERVER_BYTES = 4 * 1024**3
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SERVER_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class BackupFull(HostwardError):
    code = "wtp_backup_full"
    status = 507


class HashMismatch(HostwardError):
    code = "hash_mismatch"
    status = 422


def check_sha(sha: str) -> str:
    if not _HEX64.match(sha):
        raise Invalid("sha256: must be 64 lower-case hex digits")
    return sha


class RemoteBackup:
    def __init__(self, data_dir: Path, server_id: str) -> None:
        if not _SERVER_ID.match(server_id):
            raise Invalid("server id not usable as a directory name")
        self.root = Path(data_dir) / "wtp-backup" / server_id
        self.blobs = self.root / "blobs"

    def blob_path(self, sha: str) -> Path:
        check_sha(sha)
        return self.blobs / sha[:2] / sha

    def has(self, sha: str) -> bool:
        return self.blob_path(sha).is_file()

    def used_bytes(self) -> int:
        total = 0
        if not self.blobs.is_dir():
            return 0
        for sub in os.scandir(self.blobs):
            if sub.is_dir(follow_symlinks=False):
                for entry in os.scandir(sub.path):
                    with contextlib.suppress(OSError):
                        total += entry.stat(follow_symlinks=False).st_size
        return total

    def put(self, sha: str, body: bytes) -> bool:
        """Store ``body`` as blob ``sha``; False when it was already there. Raises on a wrong hash."""
        dest = self.blob_path(sha)
        actual = hashlib.sha256(body).hexdigest()
        if actual != sha:
            raise HashMismatch(f"sha256: body hashes to {actual}, not {sha}")
        if dest.is_file():
            return False
        if self.used_bytes() + len(body) > MAX_SERVER_BYTES:
            raise BackupFull(f"the manager keeps at most {MAX_SERVER_BYTES} bytes of WTP backup per server")
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._atomic_write(dest, body)
        return True

    def read(self, sha: str) -> Path:
        path = self.blob_path(sha)
        if not path.is_file():
            raise NotFound(f"blob {sha} is not in this server's remote backup", code="blob_not_found")
        return path

    def save_manifest(self, files: list[dict[str, Any]]) -> list[str]:
        """Store the manifest; returns the hashes it names that are not stored yet (to upload)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._atomic_write(self.root / "manifest.json", json.dumps({"files": files}).encode())
        missing = {f["sha256"] for f in files if not self.has(f["sha256"])}
        return sorted(missing)

    def manifest(self) -> list[dict[str, Any]]:
        path = self.root / "manifest.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        files = data.get("files") if isinstance(data, dict) else None
        return files if isinstance(files, list) else []

    def has_path(self, path: str) -> bool:
        """Whether the manifest has ``path`` or something below it (a directory restore)."""
        prefix = path.rstrip("/") + "/"
        return any(
            isinstance(f, dict) and (f.get("path") == path or str(f.get("path", "")).startswith(prefix))
            for f in self.manifest()
        )

    def _atomic_write(self, dest: Path, body: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
