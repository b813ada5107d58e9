"""``FakeManager`` plus the WTP remote-backup endpoints of the agent channel (hand-written fake).

``POST /wtp/manifest`` stores the file list and answers ``{files, missing}``; ``PUT /wtp/blobs/{sha}``
checks the body's hash; ``GET /wtp/blobs/{sha}`` returns it (404 when unknown).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.agent_manager import FakeManager, _Handler


class _WtpHandler(_Handler):
    fake: WtpFakeManager

    def do_PUT(self) -> None:
        self._route("PUT")

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path.removeprefix("/agent/v1")
        if not path.startswith("/wtp/"):
            return super()._route(method)
        fake = self.fake
        if fake.server_for(self.headers.get("Authorization")) is None:
            return self._error(401, "unauthorized", "unknown or revoked agent key")
        body = self._body() if method in ("PUT", "POST") else b""
        if method == "POST" and path == "/wtp/manifest":
            files = json.loads(body)["files"]
            with fake.lock:
                fake.manifests.append(files)
                missing = sorted({f["sha256"] for f in files} - set(fake.blobs))
            return self._send(200, {"files": len(files), "missing": missing})
        if path.startswith("/wtp/blobs/"):
            sha = path.rsplit("/", 1)[1]
            if method == "PUT":
                if hashlib.sha256(body).hexdigest() != sha:
                    return self._error(422, "hash_mismatch", "body does not match its name")
                with fake.lock:
                    fake.blobs[sha] = body
                    fake.puts += 1
                return self._send(200, {"sha256": sha})
            if method == "GET":
                with fake.lock:
                    data = fake.blobs.get(sha)
                if data is None:
                    return self._error(404, "not_found", "no such blob")
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return None
        return self._error(404, "not_found", f"{method} {path}")


class WtpFakeManager(FakeManager):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.blobs: dict[str, bytes] = {}
        self.manifests: list[list[dict[str, Any]]] = []
        self.puts = 0

    def handler_base(self) -> type[_Handler]:
        return _WtpHandler

    def records(self, topic: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events_of("record") if e.get("topic") == topic]

    def alarms(self, event_class: str) -> list[dict[str, Any]]:
        return [e for e in self.events_of("alarm") if e.get("event_class") == event_class]
