"""Version ordering per ecosystem, checked against the reference implementations."""

from __future__ import annotations

import pytest
from debian.debian_support import version_compare
from hypothesis import given, settings
from hypothesis import strategies as st

from hostward.agent.vulns.versions import compare, deb_key, maven_cmp, rpm_evr_cmp, rpmvercmp

_part = st.text(alphabet="0123456789.+~ab", min_size=1, max_size=8)
_upstream = st.builds(
    lambda d, rest: d + rest, st.sampled_from("0123456789"), st.text(alphabet="0123456789.+~ab", max_size=8)
)
_debver = st.builds(
    lambda epoch, up, rev: (f"{epoch}:" if epoch is not None else "") + up + (f"-{rev}" if rev else ""),
    st.one_of(st.none(), st.integers(0, 3)),
    _upstream,
    st.one_of(st.none(), _part),
)


@settings(max_examples=1500, deadline=None)
@given(_debver, _debver)
def test_deb_key_orders_like_python_debian(a: str, b: str) -> None:
    expected = version_compare(a, b)
    ka, kb = deb_key(a), deb_key(b)
    assert ((ka > kb) - (ka < kb)) == ((expected > 0) - (expected < 0)), (a, b)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1:1.0", "2.0", 1),  # epoch wins
        ("1.0~rc1", "1.0", -1),  # tilde sorts before the release
        ("1.0~~", "1.0~", -1),
        ("3.0.11-1~deb12u2", "3.0.11-1", -1),  # a stable update sorts before the unstable upload
        ("3.0.11-1~deb12u2", "3.0.11-1~deb12u1", 1),
        ("2.36-9+deb12u14", "2.36-9+deb12u9", 1),
        ("1.0", "1.0-0", 0),
        ("5.2.15-2+b8", "5.2.15-2", 1),  # binNMU
    ],
)
def test_debian_examples(a: str, b: str, expected: int) -> None:
    assert compare("debian", a, b) == expected


# rpm's tests/rpmvercmp.at, written out as (a, b, expected)
RPM_VECTORS = """
1.0 1.0 0|1.0 2.0 -1|2.0 1.0 1|2.0.1 2.0.1 0|2.0 2.0.1 -1|2.0.1 2.0 1|2.0.1a 2.0.1a 0|2.0.1a 2.0.1 1
2.0.1 2.0.1a -1|5.5p1 5.5p1 0|5.5p1 5.5p2 -1|5.5p2 5.5p1 1|5.5p10 5.5p10 0|5.5p1 5.5p10 -1|5.5p10 5.5p1 1
10xyz 10.1xyz -1|10.1xyz 10xyz 1|xyz10 xyz10 0|xyz10 xyz10.1 -1|xyz10.1 xyz10 1|xyz.4 xyz.4 0|xyz.4 8 -1
8 xyz.4 1|xyz.4 2 -1|2 xyz.4 1|5.5p2 5.6p1 -1|5.6p1 5.5p2 1|5.6p1 6.5p1 -1|6.5p1 5.6p1 1|6.0.rc1 6.0 1
6.0 6.0.rc1 -1|10b2 10a1 1|10a2 10b2 -1|1.0aa 1.0aa 0|1.0a 1.0aa -1|1.0aa 1.0a 1|10.0001 10.0001 0
10.0001 10.1 0|10.1 10.0001 0|10.0001 10.0039 -1|10.0039 10.0001 1|4.999.9 5.0 -1|5.0 4.999.9 1
20101121 20101121 0|20101121 20101122 -1|20101122 20101121 1|2_0 2_0 0|2.0 2_0 0|2_0 2.0 0|a a 0|a+ a+ 0
a+ a_ 0|a_ a+ 0|+a +a 0|+a _a 0|_a +a 0|+_ +_ 0|_+ +_ 0|_+ _+ 0|+ _ 0|_ + 0|1.0~rc1 1.0~rc1 0
1.0~rc1 1.0 -1|1.0 1.0~rc1 1|1.0~rc1 1.0~rc2 -1|1.0~rc2 1.0~rc1 1|1.0~rc1~git123 1.0~rc1~git123 0
1.0~rc1~git123 1.0~rc1 -1|1.0~rc1 1.0~rc1~git123 1|1.0^ 1.0^ 0|1.0^ 1.0 1|1.0 1.0^ -1|1.0^git1 1.0^git1 0
1.0^git1 1.0 1|1.0 1.0^git1 -1|1.0^git1 1.0^git2 -1|1.0^git2 1.0^git1 1|1.0^git1 1.01 -1|1.01 1.0^git1 1
1.0^20160101 1.0^20160101 0|1.0^20160101 1.0.1 -1|1.0.1 1.0^20160101 1
1.0^20160101^git1 1.0^20160101^git1 0|1.0^20160102 1.0^20160101^git1 1|1.0^20160101^git1 1.0^20160102 -1
1.0~rc1^git1 1.0~rc1^git1 0|1.0~rc1^git1 1.0~rc1 1|1.0~rc1 1.0~rc1^git1 -1|1.0^git1~pre 1.0^git1~pre 0
1.0^git1 1.0^git1~pre 1|1.0^git1~pre 1.0^git1 -1
"""


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(*c.split()[:2], int(c.split()[2])) for c in RPM_VECTORS.replace("\n", "|").split("|") if c.strip()],
)
def test_rpmvercmp_matches_rpm(a: str, b: str, expected: int) -> None:
    assert rpmvercmp(a, b) == expected


def test_rpm_evr() -> None:
    assert rpm_evr_cmp("1:1.0-1.el9", "2.0-1.el9") == 1
    assert rpm_evr_cmp("3.0.7-25.el9_3", "3.0.7-27.el9") == -1
    assert compare("almalinux", "3.0.7-27.el9", "3.0.7-25.el9_3") == 1
    assert rpm_evr_cmp("1.0", "1.0-5") == 0  # no release: only the version is compared


def test_pep440_semver_maven() -> None:
    assert compare("pypi", "2.0.0rc1", "2.0.0") == -1
    assert compare("pypi", "1.0.post1", "1.0") == 1
    assert compare("pypi", "not a version", "0.0.1") == -1  # invalid sorts before valid
    assert compare("npm", "1.2.3-beta.2", "1.2.3") == -1
    assert compare("npm", "v1.10.0", "1.9.9") == 1
    assert compare("npm", "1.2", "1.2.0") == 0
    assert maven_cmp("2.14.1", "2.15.0") == -1
    assert maven_cmp("2.0-beta9", "2.0") == -1
    assert maven_cmp("1.0-SNAPSHOT", "1.0") == -1
    assert maven_cmp("1.0.0", "1") == 0
    assert maven_cmp("1.0-sp1", "1.0") == 1
    assert maven_cmp("1.0-rc1", "1.0-beta2") == 1
