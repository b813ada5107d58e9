"""Enrollment: pin the manager's CA by fingerprint, trade the enrollment token for an agent credential.

1. ``GET /agent/v1/ca`` without verification (there is nothing to verify against yet);
2. the SHA-256 of the certificate's DER encoding must equal the fingerprint from the install command —
   on a mismatch nothing is saved and nothing else is sent (the token never reaches an impostor);
3. ``POST /agent/v1/enroll`` over TLS verified against that CA, with host facts, the agent name and the
   previous key when this state directory already holds one (a re-installed agent keeps its record);
4. the CA (``ca.pem``) and the credential are saved in the state directory.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import ValidationError

from hostward.agent.collectors.hostfacts import collect_host_facts
from hostward.agent.errors import EnrollmentError, FingerprintMismatch, TransportError
from hostward.agent.state import CA_NAME, Credentials, StateStore, ensure_private_dir
from hostward.agent.transport.client import AgentClient, pinned_context
from hostward.core.clock import Clock, SystemClock
from hostward.core.ids import new_id
from hostward.wire import EnrollRequest, HostFacts

log = logging.getLogger(__name__)

K_MACHINE_FALLBACK = "machine_id_fallback"
_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

TransportFactory = Callable[[], httpx.BaseTransport]


def normalize_fingerprint(value: str) -> str:
    """``sha256:AB:CD...``, ``AB:CD...`` or ``abcd...`` -> 64 lower-case hex digits."""
    text = value.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    elif text.startswith("sha256="):
        text = text[len("sha256=") :]
    text = text.replace(":", "").replace(" ", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise EnrollmentError(f"invalid CA fingerprint {value!r}: expected sha256:<64 hex digits>")
    return text


def certificate_fingerprint(pem: str) -> str:
    """SHA-256 (hex) of the DER encoding of the first certificate in ``pem``."""
    match = _PEM_RE.search(pem)
    if match is None:
        raise EnrollmentError("the manager's /ca answer holds no PEM certificate")
    try:
        der = ssl.PEM_cert_to_DER_cert(match.group(0))
    except ValueError as exc:
        raise EnrollmentError(f"the manager's CA certificate is not valid PEM: {exc}") from exc
    return hashlib.sha256(der).hexdigest()


def fetch_pinned_ca(
    manager_url: str, fingerprint: str, *, timeout: float = 15.0, transport: httpx.BaseTransport | None = None
) -> str:
    """The manager's CA PEM, only when its fingerprint matches; raises FingerprintMismatch otherwise."""
    expected = normalize_fingerprint(fingerprint)
    with AgentClient(manager_url, verify=False, timeout=timeout, transport=transport) as client:
        pem = client.get_ca()
    match = _PEM_RE.search(pem)
    actual = certificate_fingerprint(pem)
    if not hmac.compare_digest(actual, expected):
        raise FingerprintMismatch(
            f"CA fingerprint mismatch: expected sha256:{expected}, the manager at {manager_url} presented "
            f"sha256:{actual}; refusing to enroll (check the install command, or someone is in the middle)"
        )
    assert match is not None  # certificate_fingerprint succeeded
    return match.group(0) + "\n"


def machine_id_fallback(state: StateStore) -> str:
    """A random id kept in the state for hosts without /etc/machine-id."""
    value = state.get(K_MACHINE_FALLBACK)
    if not isinstance(value, str) or not value:
        value = "hostward-" + new_id()
        state.set(K_MACHINE_FALLBACK, value)
    return value


def host_facts(state: StateStore, root: Path) -> HostFacts:
    return collect_host_facts(root, machine_id_fallback=machine_id_fallback(state))


def _previous_key(previous: Credentials | None, ca_pem: str) -> str | None:
    """The old key proves the identity only to the manager that issued it (same CA); never to another."""
    if previous is None:
        return None
    try:
        old_pem = Path(previous.ca_path).read_text(encoding="ascii")
        if certificate_fingerprint(old_pem) != certificate_fingerprint(ca_pem):
            return None
    except (OSError, EnrollmentError):
        return None
    return previous.agent_key


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
    os.replace(tmp, path)


def enroll(
    manager_url: str,
    token: str,
    ca_fingerprint: str,
    state_dir: Path,
    name: str | None = None,
    *,
    root: Path = Path("/"),
    timeout: float = 15.0,
    clock: Clock | None = None,
    transport_factory: TransportFactory | None = None,
) -> Credentials:
    """Enroll this host with the manager and save the credential in ``state_dir``."""
    if not manager_url.startswith("https://"):
        raise EnrollmentError(f"manager URL must start with https:// (got {manager_url!r})")
    manager_url = manager_url.rstrip("/")
    wall = clock or SystemClock()

    def transport() -> httpx.BaseTransport | None:
        return transport_factory() if transport_factory else None

    try:
        ca_pem = fetch_pinned_ca(manager_url, ca_fingerprint, timeout=timeout, transport=transport())
    except TransportError as exc:
        raise EnrollmentError(f"cannot fetch the manager's CA: {exc}") from exc

    ensure_private_dir(state_dir)
    state = StateStore.open(state_dir)
    try:
        previous = state.credentials()
        try:
            request = EnrollRequest(
                token=token,
                name=name,
                facts=host_facts(state, root),
                previous_key=_previous_key(previous, ca_pem),
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise EnrollmentError(f"invalid enrollment request: {where}: {first['msg']}") from exc
        verify = pinned_context(ca_pem=ca_pem)
        with AgentClient(manager_url, verify=verify, timeout=timeout, transport=transport()) as client:
            try:
                response = client.enroll(request)
            except TransportError as exc:
                raise EnrollmentError(f"enrollment refused: {exc}") from exc
        ca_path = state_dir / CA_NAME
        _write_private(ca_path, ca_pem)
        creds = Credentials(
            server_id=response.server_id,
            agent_key=response.agent_key,
            manager_url=manager_url,
            ca_path=str(ca_path),
            region=response.region,
            name=name,
            heartbeat_interval=response.heartbeat_interval,
            enrolled_at=wall.now(),
        )
        state.save_credentials(creds)
        if previous is not None and previous.server_id != creds.server_id:
            log.warning("re-enrolled as a new server %s (was %s)", creds.server_id, previous.server_id)
        return creds
    finally:
        state.close()
