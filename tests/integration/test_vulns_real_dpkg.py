"""Vulnerability matching on this machine's real dpkg database against the sample feeds
(tests/samples/vulns): a later fix is reported, a Debian backport and a never-affected release are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostward.agent.vulns import read_distro, scan_host
from hostward.agent.vulns.versions import compare

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "vulns"


def test_sample_feed_against_the_real_dpkg_database() -> None:
    distro = read_distro()
    if distro is None or (distro.family, distro.version_id) != ("Debian", "12"):
        pytest.fail(f"this test is written for the Debian 12 test machines, found {distro}")
    scan = scan_host([SAMPLES / "debian-tracker.json", SAMPLES / "osv"], languages=False)
    assert scan.issues == []
    by_package = {f.package: f for f in scan.result.findings}
    glibc = by_package["glibc"]  # fixed in a later version than installed: reported
    assert compare("debian", glibc.installed_version, "2.36-9+deb12u999") < 0
    assert glibc.fixed_version == "2.36-9+deb12u999"
    assert set(glibc.ids) == {"CVE-9999-0001", "HWTEST-2024-0001"}
    assert (glibc.severity.band, glibc.severity.score) == ("high", 7.8)
    assert "libc6" in glibc.binaries
    assert glibc.fix_command is not None and glibc.fix_command.startswith("apt-get install --only-upgrade ")
    assert "libc6" in glibc.fix_command.split()
    # openssl: the tracker's bookworm fix (3.0.11-1~deb12u1) is at or below the installed version, so the
    # release-agnostic OSV record's upstream-style 3.0.99-1 does not make it a finding (backport)
    assert "openssl" not in by_package
    assert scan.result.suppressed_backports >= 2
    assert "bash" not in by_package  # bookworm never affected (fixed_version 0)
    assert "tar" not in by_package  # open but unimportant
    assert "zlib" not in by_package  # Debian 11 record only
    assert "coreutils" not in by_package  # fixed long before the installed version
    assert set(by_package) == {"glibc"}
