from __future__ import annotations

import pytest

from hostward.agent.enroll import certificate_fingerprint, normalize_fingerprint
from hostward.agent.errors import EnrollmentError
from tests.fakes.agent_manager import fingerprint, make_ca, pem

HEX = "ab" * 32


@pytest.mark.parametrize(
    "value",
    [
        f"sha256:{HEX}",
        HEX,
        HEX.upper(),
        f"SHA256:{HEX.upper()}",
        ":".join(HEX[i : i + 2] for i in range(0, 64, 2)),
        f"  {HEX}\n",
    ],
)
def test_fingerprint_forms(value: str) -> None:
    assert normalize_fingerprint(value) == HEX


@pytest.mark.parametrize("value", ["", "sha256:", "sha256:abc", "zz" * 32, "md5:" + HEX])
def test_bad_fingerprints(value: str) -> None:
    with pytest.raises(EnrollmentError, match="invalid CA fingerprint"):
        normalize_fingerprint(value)


def test_certificate_fingerprint_matches_the_manager_format() -> None:
    cert, _ = make_ca()
    assert "sha256:" + certificate_fingerprint(pem(cert)) == fingerprint(cert)
    with pytest.raises(EnrollmentError):
        certificate_fingerprint("not a pem")


def test_agent_accepts_the_fingerprint_format_the_manager_prints() -> None:
    from hostward.manager.agentlink.pki import fingerprint_of

    cert, _ = make_ca()
    printed = fingerprint_of(cert)
    assert normalize_fingerprint(printed) == certificate_fingerprint(pem(cert))
