"""The WTP backup's copy on the manager, and restoring a file from it when the local copy is gone.

Agent channel (see docs/DEVNOTES.md): ``POST /agent/v1/wtp/manifest {files:[{path, sha256, mode, uid,
gid}]}`` answers ``{files, missing}`` (the blobs the manager does not have yet), each missing blob goes
up with ``PUT /agent/v1/wtp/blobs/{sha256}`` (raw body) and ``GET /agent/v1/wtp/blobs/{sha256}`` brings
one back. Blobs are content-addressed, so an upload interrupted half-way is simply resumed by the next
one (the manager reports what is still missing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hostward.agent.commands import failed, succeeded
from hostward.agent.errors import AgentError, TransportError
from hostward.agent.transport.client import AgentClient
from hostward.agent.wtp.backup import matches
from hostward.wire import Command, CommandResult

if TYPE_CHECKING:
    from hostward.agent.wtprunguard import RunnerGuard
    from hostward.agent.wtprunner import WtpRunner

log = logging.getLogger(__name__)

RESTORE_COMMAND = "wtp_remote_restore"
_SHA = re.compile(r"^[0-9a-f]{64}$")
_OCTETS = {"Content-Type": "application/octet-stream"}
_JSON = {"Content-Type": "application/json"}


class RemoteBackupError(AgentError):
    code = "wtp_remote_backup"


# ---- agent channel calls (kept here rather than in transport/client.py: WTP-only) ---------------------


def post_manifest(client: AgentClient, files: list[dict[str, Any]]) -> dict[str, Any]:
    resp = client._request("POST", "/wtp/manifest", content=json.dumps({"files": files}), headers=_JSON)
    try:
        data = resp.json()
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


def put_blob(client: AgentClient, sha: str, data: bytes) -> None:
    client._request("PUT", f"/wtp/blobs/{sha}", content=data, headers=_OCTETS)


def get_blob(client: AgentClient, sha: str) -> bytes:
    return client._request("GET", f"/wtp/blobs/{sha}").content


# ---- the component --------------------------------------------------------------------------------


class RemoteBackup:
    """Uploads the guard's backup (``upload``) and serves ``wtp_remote_restore``."""

    def __init__(self, client_factory: Callable[[], AgentClient]) -> None:
        self._factory = client_factory
        self._client: AgentClient | None = None
        self._lock = threading.Lock()

    def _get(self) -> AgentClient:
        if self._client is None:
            self._client = self._factory()
        return self._client

    def upload(self, guard: RunnerGuard) -> str:
        """Send the manifest, then every blob the manager says it lacks; returns a one-line summary."""
        manifest = guard.manifest()
        files = [
            {"path": p, "sha256": e.sha256, "mode": e.mode, "uid": e.uid, "gid": e.gid}
            for p, e in sorted(manifest.items())
            if e.kind == "file"
        ]
        store = guard.store
        if store is None:
            raise RemoteBackupError("the local backup is not ready")
        with self._lock:
            try:
                answer = post_manifest(self._get(), files)
                missing = answer.get("missing")
                if not isinstance(missing, list):
                    missing = sorted({f["sha256"] for f in files})
                sent = 0
                for sha in missing:
                    if not isinstance(sha, str) or not _SHA.match(sha) or not store.has(sha):
                        continue
                    put_blob(self._get(), sha, store.read(sha))
                    sent += 1
            except TransportError as exc:
                raise RemoteBackupError(str(exc)) from exc
        log.info("wtp: remote backup: %d files, %d blobs uploaded", len(files), sent)
        return f"remote backup: {len(files)} files, {sent} blobs uploaded"

    def fetch(self, guard: RunnerGuard, sha: str) -> None:
        """Put blob ``sha`` from the manager back into the local store (content checked)."""
        with self._lock:
            try:
                data = get_blob(self._get(), sha)
            except TransportError as exc:
                raise RemoteBackupError(f"cannot fetch {sha[:12]} from the manager: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != sha:
            raise RemoteBackupError(f"the manager's copy of {sha[:12]} does not match its hash")
        store = guard.store
        assert store is not None
        dest = store.path(sha)
        os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)


def restore_command(runner: WtpRunner, remote: RemoteBackup) -> Callable[[Command], CommandResult]:
    """``wtp_remote_restore {path}``: restore ``path``, fetching its content from the manager if the
    local backup lost it. Result data ``{path, sha256, source: local | manager, restored}``."""

    def handle(command: Command) -> CommandResult:
        path = command.payload.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            return failed("wtp_remote_restore needs payload {path: absolute path}")
        path = os.path.normpath(path)
        try:
            guard = runner.restore_path(path)
        except AgentError as exc:
            return failed(str(exc), path=path)
        entry = guard.manifest()[path]
        source = "local"
        if entry.kind == "file" and guard.store is not None and not guard.store.has(entry.sha256):
            try:
                remote.fetch(guard, entry.sha256)
            except (AgentError, OSError) as exc:
                return failed(str(exc), path=path, sha256=entry.sha256)
            source = "manager"
        guard.reconcile(path, "deleted" if not os.path.lexists(path) else "modified")
        ok = matches(path, entry)
        detail = f"{path} restored from the {source} backup" if ok else f"{path} could not be restored"
        result = succeeded if ok else failed
        return result(detail, path=path, sha256=entry.sha256, source=source, restored=ok)

    return handle
