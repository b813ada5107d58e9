"""The manager's own certificate authority and the TLS certificate of its agent (and console) port.

``manager init`` calls ``ensure_pki``: it creates the CA once (EC P-256, 10 years) and keeps it on every
later call, because agents pin its fingerprint; the server certificate is (re)issued whenever it is
missing, not signed by the current CA, close to expiry or lacking one of the names it must carry.

The CA fingerprint, as carried by the install command and checked by the agent, is
``"sha256:" + SHA-256(DER of the CA certificate)`` in lowercase hex (64 digits after the prefix).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostward.core.clock import utcnow
from hostward.core.errors import ConfigError
from hostward.manager.settings import ManagerSettings, split_host_port

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=825)
# A server certificate this close to expiry is reissued at the next ``ensure_pki`` (init or serve).
RENEW_BEFORE = timedelta(days=30)
FINGERPRINT_PREFIX = "sha256:"

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class PkiStatus:
    """What ``ensure_pki`` did and what the manager now serves."""

    ca_created: bool
    server_cert_issued: bool
    fingerprint: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]


def ensure_pki(
    settings: ManagerSettings,
    extra_names: Sequence[str] = (),
    *,
    now: datetime | None = None,
    create_ca: bool = True,
) -> PkiStatus:
    """Create the CA if absent (or refuse when ``create_ca`` is False) and make the server cert current.

    ``extra_names`` are DNS names or IP addresses added to the server certificate's SANs (on top of
    localhost, loopback, this host's name and non-loopback addresses, and the host of ``agent_url``).
    Names already in an existing server certificate are kept, so a later call without ``extra_names``
    (``manager serve`` renewing) does not drop them.
    """
    moment = now or utcnow()
    pki_dir = settings.ca_cert_path.parent
    ca_created = False
    if settings.ca_cert_path.exists() and settings.ca_key_path.exists():
        ca_cert, ca_key = _load_ca(settings)
    elif settings.ca_cert_path.exists() or settings.ca_key_path.exists():
        missing = settings.ca_key_path if settings.ca_cert_path.exists() else settings.ca_cert_path
        raise ConfigError(str(missing), "ca", "CA certificate and key must both exist; one is missing")
    elif not create_ca:
        raise ConfigError(
            str(settings.ca_cert_path), "ca", "no manager CA; run `hostward manager init` first"
        )
    else:
        _make_private_dir(pki_dir)
        ca_cert, ca_key = _new_ca(moment)
        _write_key(settings.ca_key_path, ca_key)
        _write_public(settings.ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
        ca_created = True

    dns, ips = default_names(settings)
    extra_dns, extra_ips = _split_names(extra_names)
    dns |= extra_dns
    ips |= extra_ips
    current = _load_server_cert(settings)
    if current is not None:
        old_dns, old_ips = _cert_names(current)
        dns |= old_dns
        ips |= old_ips
    issued = False
    if current is None or _needs_reissue(current, ca_cert, dns, ips, moment):
        _make_private_dir(pki_dir)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _new_server_cert(ca_cert, ca_key, key, dns, ips, moment)
        _write_key(settings.server_key_path, key)
        # Leaf first, then the CA: clients that only trust the CA can still build the chain.
        chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
            serialization.Encoding.PEM
        )
        _write_public(settings.server_cert_path, chain)
        issued = True
    return PkiStatus(
        ca_created=ca_created,
        server_cert_issued=issued,
        fingerprint=fingerprint_of(ca_cert),
        dns_names=tuple(sorted(dns)),
        ip_addresses=tuple(sorted(str(ip) for ip in ips)),
    )


def ca_fingerprint(settings: ManagerSettings) -> str:
    """``sha256:<hex>`` of the CA certificate's DER; the value agents pin at enrollment."""
    return fingerprint_of(x509.load_pem_x509_certificate(ca_pem(settings)))


def fingerprint_of(cert: x509.Certificate) -> str:
    return FINGERPRINT_PREFIX + cert.fingerprint(hashes.SHA256()).hex()


def ca_pem(settings: ManagerSettings) -> bytes:
    """The CA certificate as PEM (served unauthenticated at ``GET /agent/v1/ca``)."""
    try:
        return settings.ca_cert_path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            str(settings.ca_cert_path), "ca", "no manager CA; run `hostward manager init` first"
        ) from exc


def default_names(settings: ManagerSettings) -> tuple[set[str], set[_IPAddress]]:
    """SANs every server certificate carries: loopback, this host's name and addresses, agent_url's host."""
    dns: set[str] = {"localhost"}
    ips: set[_IPAddress] = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    hostname = socket.gethostname()
    if hostname:
        dns.add(hostname.lower())
        fqdn = socket.getfqdn(hostname)
        if fqdn and "." in fqdn and not fqdn.startswith("localhost"):
            dns.add(fqdn.lower())
    ips |= set(host_addresses())
    names = []
    if settings.agent_url:
        names.append(urlsplit(settings.agent_url).hostname or "")
    for value in (settings.agent_listen, settings.listen):
        names.append(split_host_port(value)[0])
    extra_dns, extra_ips = _split_names(n for n in names if n and n not in ("0.0.0.0", "::"))
    return dns | extra_dns, ips | extra_ips


def host_addresses() -> list[_IPAddress]:
    """This host's non-loopback, non-link-local interface addresses (v4 and v6)."""
    import psutil

    found: list[_IPAddress] = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(addr.address.split("%", 1)[0])
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local or ip.is_unspecified:
                continue
            found.append(ip)
    return found


# ---- internals ------------------------------------------------------------------------------------


def _split_names(names: Iterable[str]) -> tuple[set[str], set[_IPAddress]]:
    dns: set[str] = set()
    ips: set[_IPAddress] = set()
    for raw in names:
        name = raw.strip().strip("[]")
        if not name:
            continue
        try:
            ips.add(ipaddress.ip_address(name))
        except ValueError:
            label = name.lower().rstrip(".")
            if not all(part and len(part) <= 63 for part in label.split(".")) or len(label) > 253:
                raise ConfigError(
                    "<command line>", "extra_names", f"not a host name or IP: {raw!r}"
                ) from None
            dns.add(label)
    return dns, ips


def _new_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hostward"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"hostward manager CA {socket.gethostname()}"[:64]),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_server_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    dns: set[str],
    ips: set[_IPAddress],
    now: datetime,
) -> x509.Certificate:
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(dns)]
    sans += [x509.IPAddress(ip) for ip in sorted(ips, key=lambda a: (a.version, int(a)))]
    not_after = min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hostward"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "hostward manager"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _load_ca(settings: ManagerSettings) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(settings.ca_cert_path.read_bytes())
        key = serialization.load_pem_private_key(settings.ca_key_path.read_bytes(), password=None)
    except ValueError as exc:
        raise ConfigError(
            str(settings.ca_cert_path), "ca", f"unreadable CA certificate or key: {exc}"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(str(settings.ca_key_path), "ca", "CA key is not an EC private key")
    if key.public_key() != cert.public_key():
        raise ConfigError(str(settings.ca_key_path), "ca", "CA key does not match the CA certificate")
    return cert, key


def _load_server_cert(settings: ManagerSettings) -> x509.Certificate | None:
    if not settings.server_cert_path.exists() or not settings.server_key_path.exists():
        return None
    try:
        cert = x509.load_pem_x509_certificate(settings.server_cert_path.read_bytes())
        key = serialization.load_pem_private_key(settings.server_key_path.read_bytes(), password=None)
    except ValueError:
        return None  # unreadable: reissue
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if key.public_key() != cert.public_key():
        return None
    return cert


def _cert_names(cert: x509.Certificate) -> tuple[set[str], set[_IPAddress]]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    ips: set[_IPAddress] = set()
    for value in sans.get_values_for_type(x509.IPAddress):
        if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            ips.add(value)
    return set(sans.get_values_for_type(x509.DNSName)), ips


def _needs_reissue(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    dns: set[str],
    ips: set[_IPAddress],
    now: datetime,
) -> bool:
    if cert.issuer != ca_cert.subject:
        return True
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return True
    if cert.not_valid_after_utc - RENEW_BEFORE <= now or cert.not_valid_before_utc > now:
        return True
    have_dns, have_ips = _cert_names(cert)
    return not (dns <= have_dns and ips <= have_ips)


def _make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _atomic_write(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _atomic_write(path, data, 0o644)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    # The file is created with its final mode, so a private key is never readable by others, not even
    # for a moment; the rename makes a crash leave either the old or the new file, never half of one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
