"""A hand-written, in-memory fake of the manager's agent channel (``/agent/v1``) over real HTTPS.

It speaks the wire protocol with its own throw-away CA, so agent tests exercise real TLS pinning, real
HTTP and real long polls without the manager's database. Knobs: ``down`` (answer 503), ``reject``
(event keys to ack as rejected), ``max_body`` (413 above it), ``revoked`` (401 for every agent key).
"""

from __future__ import annotations

import json
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hostward.wire import (
    CommandResult,
    EnrollRequest,
    EnrollResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    PolicyBundle,
)


def make_ca(common_name: str = "fake manager CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_server_cert(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake manager")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def fingerprint(cert: x509.Certificate) -> str:
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class FakeServer:
    server_id: str
    key: str
    name: str | None
    machine_id: str
    commands: list[dict[str, Any]] = field(default_factory=list)


class FakeManager:
    """Start with ``with FakeManager() as fm:``; ``fm.url`` is the agent channel root."""

    def __init__(self, token: str = "enroll-token-123", heartbeat_interval: int = 10) -> None:
        self.token = token
        self.heartbeat_interval = heartbeat_interval
        self.ca, ca_key = make_ca()
        cert, key = make_server_cert(self.ca, ca_key)
        self.ca_pem = pem(self.ca)
        self.fingerprint = fingerprint(self.ca)
        self._tmp = tempfile.TemporaryDirectory()
        cert_path = Path(self._tmp.name) / "server.pem"
        key_path = Path(self._tmp.name) / "server.key"
        cert_path.write_text(pem(cert) + self.ca_pem)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.load_cert_chain(cert_path, key_path)

        self.lock = threading.Condition()
        self.servers: dict[str, FakeServer] = {}
        self.enrollments: list[EnrollRequest] = []
        self.heartbeats: list[HeartbeatRequest] = []
        self.events: list[dict[str, Any]] = []
        self.seen_keys: set[str] = set()
        self.duplicates = 0
        self.results: dict[str, CommandResult] = {}
        self.policy = PolicyBundle(
            version=1, group_id="g1", group_name="default", edition="premium", protection=True
        )
        self.policy_fetches = 0
        self.down = False
        self.revoked = False
        self.reject: set[str] = set()
        self.max_body: int | None = None
        self.event_posts = 0
        self.delivered: dict[str, float] = {}  # command id -> time.monotonic() of delivery
        self.queued: dict[str, float] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def handler_base(self) -> type[_Handler]:
        """The request handler class this fake serves with (a subclass adds endpoints)."""
        return _Handler

    def start(self, port: int = 0) -> Self:
        handler = type("Handler", (self.handler_base(),), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = self._ssl.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self.lock:
            self.lock.notify_all()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- test helpers ----------------------------------------------------------------------------

    def queue(self, server_id: str, kind: str, payload: dict[str, Any] | None = None) -> str:
        command_id = str(uuid.uuid4())
        with self.lock:
            self.servers_by_id()[server_id].commands.append(
                {
                    "id": command_id,
                    "kind": kind,
                    "payload": payload or {},
                    "created_at": datetime.now(UTC).isoformat(),
                }
            )
            self.queued[command_id] = time.monotonic()
            self.lock.notify_all()
        return command_id

    def servers_by_id(self) -> dict[str, FakeServer]:
        return {s.server_id: s for s in self.servers.values()}

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("kind") == kind]

    # ---- request handling (called by the handler) ------------------------------------------------

    def server_for(self, auth: str | None) -> FakeServer | None:
        if self.revoked or not auth or not auth.startswith("Bearer "):
            return None
        return self.servers.get(auth[len("Bearer ") :])


class _Handler(BaseHTTPRequestHandler):
    fake: FakeManager
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the 40 ms delayed ACK

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, {"error": {"code": code, "message": message}})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        fake = self.fake
        body = self._body() if method == "POST" else b""
        url = urlsplit(self.path)
        path = url.path.removeprefix("/agent/v1")
        if fake.down:
            return self._error(503, "unavailable", "manager is down")
        if fake.max_body is not None and len(body) > fake.max_body:
            return self._error(413, "payload_too_large", "too large")
        if method == "GET" and path == "/ca":
            return self._send(200, fake.ca_pem, "application/x-pem-file")
        if method == "POST" and path == "/enroll":
            return self._enroll(body)
        server = fake.server_for(self.headers.get("Authorization"))
        if server is None:
            return self._error(401, "unauthorized", "unknown or revoked agent key")
        if method == "POST" and path == "/heartbeat":
            req = HeartbeatRequest.model_validate_json(body)
            with fake.lock:
                fake.heartbeats.append(req)
                pending = bool(server.commands)
            resp = HeartbeatResponse(
                server_time=datetime.now(UTC),
                heartbeat_interval=fake.heartbeat_interval,
                policy_version=fake.policy.version,
                commands_pending=pending,
            )
            return self._send(200, resp.model_dump_json())
        if method == "GET" and path == "/commands":
            wait = float(parse_qs(url.query).get("wait", ["0"])[0])
            with fake.lock:
                fake.lock.wait_for(lambda: bool(server.commands) or fake.down, timeout=min(wait, 25))
                commands, server.commands = server.commands, []
                for command in commands:
                    fake.delivered[command["id"]] = time.monotonic()
            return self._send(200, {"commands": commands})
        if method == "POST" and path.startswith("/commands/") and path.endswith("/result"):
            command_id = path.split("/")[2]
            fake.results[command_id] = CommandResult.model_validate_json(body)
            return self._send(200, {"id": command_id, "status": fake.results[command_id].status})
        if method == "POST" and path == "/events":
            batch = json.loads(body)
            acks = []
            with fake.lock:
                fake.event_posts += 1
                for event in batch["events"]:
                    key = event["key"]
                    if key in fake.reject:
                        acks.append({"key": key, "status": "rejected", "reason": "test rejects it"})
                    elif key in fake.seen_keys:
                        fake.duplicates += 1
                        acks.append({"key": key, "status": "duplicate"})
                    else:
                        fake.seen_keys.add(key)
                        fake.events.append(event)
                        acks.append({"key": key, "status": "accepted"})
                fake.lock.notify_all()
            return self._send(200, {"acks": acks})
        if method == "GET" and path == "/policy":
            fake.policy_fetches += 1
            return self._send(200, fake.policy.model_dump_json())
        return self._error(404, "not_found", f"{method} {path}")

    def _enroll(self, body: bytes) -> None:
        fake = self.fake
        req = EnrollRequest.model_validate_json(body)
        if req.token != fake.token:
            return self._error(401, "invalid_token", "enrollment token unknown")
        with fake.lock:
            fake.enrollments.append(req)
            existing = None
            if req.previous_key and req.previous_key in fake.servers:
                existing = fake.servers.pop(req.previous_key)
            server_id = existing.server_id if existing else str(uuid.uuid4())
            key = "agent-" + uuid.uuid4().hex
            fake.servers[key] = FakeServer(server_id, key, req.name, req.facts.machine_id)
        resp = EnrollResponse(
            server_id=server_id, agent_key=key, region="default", heartbeat_interval=fake.heartbeat_interval
        )
        return self._send(200, resp.model_dump_json())
