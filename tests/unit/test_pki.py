"""The manager's CA and server certificate: created once, kept, renewed, and usable for real TLS."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from hostward.core.clock import utcnow
from hostward.core.errors import ConfigError
from hostward.manager.agentlink import pki
from hostward.manager.settings import ManagerSettings


@pytest.fixture
def settings(tmp_path: Path) -> ManagerSettings:
    return ManagerSettings(data_dir=tmp_path / "m")


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {
        str(i) for i in ext.get_values_for_type(x509.IPAddress)
    }


def test_init_creates_ca_and_server_cert_with_private_keys(settings: ManagerSettings) -> None:
    status = pki.ensure_pki(settings, ["manager.example.org", "10.9.8.7"])

    assert status.ca_created and status.server_cert_issued
    for key_path in (settings.ca_key_path, settings.server_key_path):
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.ca_cert_path.parent.stat().st_mode) == 0o700

    ca = _load(settings.ca_cert_path)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert timedelta(days=3649) < lifetime < timedelta(days=3651)

    server = _load(settings.server_cert_path)
    server.verify_directly_issued_by(ca)
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    dns, ips = _sans(server)
    assert {"localhost", "manager.example.org", socket.gethostname().lower()} <= dns
    assert {"127.0.0.1", "::1", "10.9.8.7"} <= ips
    for addr in pki.host_addresses():
        assert str(addr) in ips
        assert not ipaddress.ip_address(addr).is_loopback


def test_fingerprint_is_sha256_of_ca_der(settings: ManagerSettings) -> None:
    status = pki.ensure_pki(settings)
    der = ssl.PEM_cert_to_DER_cert(settings.ca_cert_path.read_text())
    expected = "sha256:" + hashlib.sha256(der).hexdigest()
    assert pki.ca_fingerprint(settings) == expected == status.fingerprint
    assert len(expected) == len("sha256:") + 64 and expected == expected.lower()


def test_second_init_keeps_ca_and_extra_names(settings: ManagerSettings) -> None:
    first = pki.ensure_pki(settings, ["extra.example"])
    ca_before = settings.ca_cert_path.read_bytes()
    server_before = settings.server_cert_path.read_bytes()

    again = pki.ensure_pki(settings)

    assert not again.ca_created and not again.server_cert_issued
    assert settings.ca_cert_path.read_bytes() == ca_before
    assert settings.server_cert_path.read_bytes() == server_before
    assert again.fingerprint == first.fingerprint

    # A new name reissues the server certificate under the same CA and keeps the earlier extra name.
    more = pki.ensure_pki(settings, ["second.example"])
    assert more.server_cert_issued and not more.ca_created
    assert settings.ca_cert_path.read_bytes() == ca_before
    dns, _ = _sans(_load(settings.server_cert_path))
    assert {"extra.example", "second.example"} <= dns


def test_server_cert_renewed_close_to_expiry(settings: ManagerSettings) -> None:
    pki.ensure_pki(settings)
    not_after = _load(settings.server_cert_path).not_valid_after_utc

    later = pki.ensure_pki(settings, now=not_after - timedelta(days=10))

    assert later.server_cert_issued and not later.ca_created
    assert _load(settings.server_cert_path).not_valid_after_utc > not_after


def test_server_cert_of_another_ca_is_replaced(settings: ManagerSettings, tmp_path: Path) -> None:
    other = ManagerSettings(data_dir=tmp_path / "other")
    pki.ensure_pki(other)
    pki.ensure_pki(settings)
    settings.server_cert_path.write_bytes(other.server_cert_path.read_bytes())
    settings.server_key_path.write_bytes(other.server_key_path.read_bytes())

    assert pki.ensure_pki(settings).server_cert_issued
    _load(settings.server_cert_path).verify_directly_issued_by(_load(settings.ca_cert_path))


def test_serve_refuses_to_invent_a_ca(settings: ManagerSettings) -> None:
    with pytest.raises(ConfigError) as err:
        pki.ensure_pki(settings, create_ca=False)
    assert err.value.key == "ca" and "manager init" in err.value.reason
    assert not settings.ca_cert_path.exists()


def test_half_a_ca_is_an_error_not_a_silent_new_ca(settings: ManagerSettings) -> None:
    pki.ensure_pki(settings)
    settings.ca_key_path.unlink()
    with pytest.raises(ConfigError, match="one is missing"):
        pki.ensure_pki(settings)


def test_bad_extra_name_is_a_config_error(settings: ManagerSettings) -> None:
    with pytest.raises(ConfigError) as err:
        pki.ensure_pki(settings, ["bad..name"])
    assert err.value.key == "extra_names"


def test_real_tls_handshake_verifies_against_the_ca(settings: ManagerSettings) -> None:
    pki.ensure_pki(settings)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(settings.server_cert_path, settings.server_key_path)
    client_ctx = ssl.create_default_context(cafile=str(settings.ca_cert_path))

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def accept() -> None:
        try:
            for _ in range(2):
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        # Both a name and an address SAN must verify.
        for host in ("localhost", "127.0.0.1"):
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client_ctx.wrap_socket(raw, server_hostname=host) as tls,
            ):
                assert tls.recv(2) == b"ok"
    finally:
        listener.close()
        thread.join(5)
    assert not errors
    assert utcnow() < _load(settings.server_cert_path).not_valid_after_utc
