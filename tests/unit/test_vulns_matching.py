"""Vulnerability matching: OSV range semantics, the Debian tracker, backports, merging, severity,
malformed feed entries, fix commands and the language-package inventory."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.vulns import Distro, InstalledPackage, VulnDB, load_feeds, match
from hostward.agent.vulns.feeds import load_feed
from hostward.agent.vulns.inventory import java_packages, language_packages, parse_dpkg_status
from hostward.agent.vulns.severity import band

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "vulns"
BOOKWORM = Distro("debian", "12", "bookworm", "Debian")


def osv(
    adv_id: str, ecosystem: str, name: str, events: list[dict[str, str]] | None = None, **extra: Any
) -> dict[str, Any]:
    affected: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": name}}
    if events is not None:
        affected["ranges"] = [{"type": "ECOSYSTEM", "events": events}]
    affected.update(extra.pop("affected_extra", {}))
    return {"id": adv_id, "affected": [affected], **extra}


def db_of(*docs: dict[str, Any]) -> VulnDB:
    db = VulnDB()
    for d in docs:
        db.add_osv(d, "test.json")
    return db


def pypi(name: str, version: str) -> InstalledPackage:
    return InstalledPackage(
        "PyPI", name, version, "pip", name, version, "/srv/app/venv/lib/python3.11/site-packages"
    )


@pytest.mark.parametrize(
    ("events", "version", "affected", "fixed"),
    [
        ([{"introduced": "0"}, {"fixed": "1.4.2"}], "1.4.1", True, "1.4.2"),
        ([{"introduced": "0"}, {"fixed": "1.4.2"}], "1.4.2", False, None),
        ([{"introduced": "1.0"}, {"fixed": "1.4.2"}], "0.9", False, None),
        ([{"introduced": "1.0"}, {"last_affected": "1.3"}], "1.3", True, None),
        ([{"introduced": "1.0"}, {"last_affected": "1.3"}], "1.3.1", False, None),
        # two branches in one range: 1.x fixed in 1.4.2, 2.x fixed in 2.1.0
        (
            [{"introduced": "1.0"}, {"fixed": "1.4.2"}, {"introduced": "2.0"}, {"fixed": "2.1.0"}],
            "1.5",
            False,
            None,
        ),
        (
            [{"introduced": "1.0"}, {"fixed": "1.4.2"}, {"introduced": "2.0"}, {"fixed": "2.1.0"}],
            "2.0.5",
            True,
            "2.1.0",
        ),
        # events in any order in the file
        ([{"fixed": "2.1.0"}, {"introduced": "2.0"}], "2.0.5", True, "2.1.0"),
        ([{"introduced": "0"}], "99.0", True, None),
    ],
)
def test_osv_ranges(events: list[dict[str, str]], version: str, affected: bool, fixed: str | None) -> None:
    result = match([pypi("example-pkg", version)], db_of(osv("HWT-1", "PyPI", "Example_Pkg", events)))
    assert bool(result.findings) is affected
    if affected:
        assert result.findings[0].fixed_version == fixed


def test_osv_versions_list_and_git_ranges() -> None:
    doc = osv(
        "HWT-2",
        "PyPI",
        "lib",
        None,
        affected_extra={
            "versions": ["1.0", "1.1"],
            "ranges": [
                {"type": "GIT", "repo": "https://example.invalid/r", "events": [{"introduced": "abc"}]}
            ],
        },
    )
    db = db_of(doc)
    assert match([pypi("lib", "1.1")], db).findings
    assert not match([pypi("lib", "1.2")], db).findings


def test_semver_ranges_for_npm() -> None:
    doc = osv("HWT-3", "npm", "left-pad", [{"introduced": "0"}, {"fixed": "1.3.0"}])
    doc["affected"][0]["ranges"][0]["type"] = "SEMVER"
    pkg = InstalledPackage(
        "npm", "left-pad", "1.2.9", "npm", "left-pad", "1.2.9", "/srv/app/node_modules/left-pad"
    )
    finding = match([pkg], db_of(doc)).findings[0]
    assert finding.fix_command == "npm install --prefix /srv/app left-pad@1.3.0"


def test_release_specific_data_and_backports() -> None:
    installed = [
        InstalledPackage("Debian", "openssl", "3.0.11-1~deb12u2", "dpkg", b, "3.0.11-1~deb12u2")
        for b in ("libssl3", "openssl")
    ]
    db = db_of(
        # upstream-style fix version in a release-agnostic record: would flag the package...
        osv(
            "HWT-UP",
            "Debian",
            "openssl",
            [{"introduced": "0"}, {"fixed": "3.0.13-1"}],
            aliases=["CVE-9999-1"],
        ),
        # ...but Debian 12's own data says the fix was backported at or below the installed version
        osv(
            "HWT-D12",
            "Debian:12",
            "openssl",
            [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u1"}],
            aliases=["CVE-9999-1"],
        ),
        # only for Debian 11: never applies to this host
        osv("HWT-D11", "Debian:11", "openssl", [{"introduced": "0"}, {"fixed": "9.9-1"}]),
        # affected for real on Debian 12
        osv(
            "HWT-REAL",
            "Debian:12",
            "openssl",
            [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u3"}],
            aliases=["CVE-9999-2"],
            severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
        ),
    )
    result = match(installed, db, BOOKWORM)
    assert [f.ids for f in result.findings] == [("HWT-REAL", "CVE-9999-2")]
    f = result.findings[0]
    assert f.binaries == ("libssl3", "openssl")
    assert f.fix_command == "apt-get install --only-upgrade libssl3 openssl"
    assert (f.severity.band, f.severity.score) == ("critical", 9.8)
    assert result.suppressed_backports == 1


def test_tracker_and_osv_records_of_one_cve_merge_and_borrow_the_score() -> None:
    db = VulnDB()
    db.add_debian_tracker(
        {
            "glibc": {
                "CVE-9999-7": {
                    "description": "d",
                    "releases": {
                        "bookworm": {
                            "status": "resolved",
                            "fixed_version": "2.36-9+deb12u5",
                            "urgency": "low",
                        }
                    },
                }
            }
        },
        "tracker.json",
    )
    db.add_osv(
        osv(
            "DSA-9999-1",
            "Debian:12",
            "glibc",
            [{"introduced": "0"}, {"fixed": "2.36-9+deb12u6"}],
            aliases=["CVE-9999-7"],
        ),
        "dsa.json",
    )
    db.add_osv(
        {
            "id": "CVE-9999-7",
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N"}],
            "affected": [],
        },
        "nvd.json",
    )
    pkg = InstalledPackage("Debian", "glibc", "2.36-9+deb12u4", "dpkg", "libc6", "2.36-9+deb12u4")
    (f,) = match([pkg], db, BOOKWORM).findings
    assert set(f.ids) == {"CVE-9999-7", "DSA-9999-1"}
    assert f.fixed_version == "2.36-9+deb12u6"  # the highest fix any record needs
    assert (f.severity.band, f.severity.score) == ("medium", 5.5)  # CVSS from another advisory beats urgency


def test_tracker_statuses() -> None:
    db = VulnDB()
    db.add_debian_tracker(
        {
            "bash": {"CVE-9999-10": {"releases": {"bookworm": {"status": "resolved", "fixed_version": "0"}}}},
            "tar": {
                "CVE-9999-11": {"releases": {"bookworm": {"status": "open", "urgency": "unimportant"}}},
                "CVE-9999-12": {"releases": {"bookworm": {"status": "open", "urgency": "high"}}},
                "CVE-9999-13": {"releases": {"bookworm": {"status": "undetermined"}}},
            },
        },
        "t.json",
    )
    pkgs = [InstalledPackage("Debian", n, "1.0-1", "dpkg", n, "1.0-1") for n in ("bash", "tar")]
    (f,) = match(pkgs, db, BOOKWORM).findings
    assert f.ids == ("CVE-9999-12",) and f.fixed_version is None and f.severity.band == "high"
    assert "none is known yet" in f.remediation


def test_malformed_entries_are_reported_and_the_rest_imported() -> None:
    db = load_feeds([SAMPLES / "malformed.json"])
    issues = {(i.entry.split(" ")[0], i.message.split(":")[0]) for i in db.issues}
    assert {e for e, _ in issues} == {
        "#1",
        "#2",
        "HWTEST-BAD-AFFECTED",
        "HWTEST-BAD-EVENT",
        "HWTEST-BAD-PACKAGE",
        "HWTEST-BAD-VECTOR",
    }
    assert all(i.file.endswith("malformed.json") for i in db.issues)
    assert set(db.index) == {
        ("pypi", "example-pkg"),
        ("npm", "right-pad"),
        ("maven", "org.example:lib"),
        ("pypi", "other-pkg"),
    }
    maven = InstalledPackage(
        "Maven", "org.example:lib", "2.14.1", "jar", "org.example:lib", "2.14.1", "/opt/app/lib.jar"
    )
    (f,) = match([maven, pypi("example-pkg", "1.2")], db).findings[:1]
    assert f.severity.band == "unknown"


def test_whole_file_problems(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"some": "thing"}))
    db = VulnDB()
    load_feed(db, tmp_path)
    load_feed(db, tmp_path / "missing.json")
    messages = sorted(str(i) for i in db.issues)
    assert any("broken.json: file: not valid JSON" in m for m in messages)
    assert any("neither OSV nor Debian" in m for m in messages)
    assert any("missing.json: file: cannot read" in m for m in messages)


def test_osv_zip_archive(tmp_path: Path) -> None:
    archive = tmp_path / "PyPI.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(
            "HWT-Z.json", json.dumps(osv("HWT-Z", "PyPI", "zed", [{"introduced": "0"}, {"fixed": "2.0"}]))
        )
    assert (
        match([pypi("zed", "1.0")], load_feeds([archive])).findings[0].fix_command
        == "pip install --upgrade 'zed>=2.0'"
    )


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (9.0, "critical"),
        (8.9, "high"),
        (7.0, "high"),
        (6.9, "medium"),
        (4.0, "medium"),
        (3.9, "low"),
        (0.0, "low"),
    ],
)
def test_severity_bands(score: float, expected: str) -> None:
    assert band(score) == expected


def test_dpkg_status_keeps_source_packages() -> None:
    text = (
        "Package: libssl3\nStatus: install ok installed\nSource: openssl\nVersion: 3.0.11-1~deb12u2\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b8\nSource: bash (5.2.15-2)\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n"
    )
    pkgs = parse_dpkg_status(text)
    assert [(p.name, p.version, p.binary, p.binary_version) for p in pkgs] == [
        ("openssl", "3.0.11-1~deb12u2", "libssl3", "3.0.11-1~deb12u2"),
        ("bash", "5.2.15-2", "bash", "5.2.15-2+b8"),
    ]


def _jar(path: Path, coords: list[tuple[str, str, str]], nested: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        for g, a, v in coords:
            zf.writestr(
                f"META-INF/maven/{g}/{a}/pom.properties",
                f"#generated\ngroupId={g}\nartifactId={a}\nversion={v}\n",
            )
        for name, data in (nested or {}).items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_language_inventory(tmp_path: Path) -> None:
    site = tmp_path / "opt/app/venv/lib/python3.11/site-packages"
    (site / "Jinja2-2.10.dist-info").mkdir(parents=True)
    (site / "Jinja2-2.10.dist-info/METADATA").write_text(
        "Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.10\n\nbody\n"
    )
    debian_site = tmp_path / "usr/lib/python3/dist-packages/requests-2.28.1.dist-info"
    debian_site.mkdir(parents=True)
    (debian_site / "METADATA").write_text("Name: requests\nVersion: 2.28.1\n")
    info = tmp_path / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "python3-requests.list").write_text("/usr/lib/python3/dist-packages/requests-2.28.1.dist-info\n")
    mod = tmp_path / "srv/web/node_modules/@scope/widget"
    mod.mkdir(parents=True)
    (mod / "package.json").write_text(json.dumps({"name": "@scope/widget", "version": "0.3.1"}))
    (tmp_path / "srv/web/node_modules/.bin").mkdir()
    inner = _jar(tmp_path / "inner.jar", [("org.apache.logging.log4j", "log4j-core", "2.14.1")])
    (tmp_path / "opt/app/app.jar").parent.mkdir(parents=True, exist_ok=True)
    _jar(
        tmp_path / "opt/app/app.jar",
        [("com.example", "app", "1.0")],
        {"BOOT-INF/lib/log4j-core-2.14.1.jar": inner},
    )
    found = {(p.ecosystem, p.name, p.version, p.manager) for p in language_packages(tmp_path)}
    assert found == {
        ("PyPI", "jinja2", "2.10", "pip"),
        ("npm", "@scope/widget", "0.3.1", "npm"),
        ("Maven", "com.example:app", "1.0", "jar"),
        ("Maven", "org.apache.logging.log4j:log4j-core", "2.14.1", "jar"),
    }  # requests is dpkg's: covered by Debian's advisories, not matched against PyPI's
    nested = [p for p in java_packages(str(tmp_path / "opt/app/app.jar")) if "log4j" in p.name]
    assert nested[0].location.endswith("app.jar!/BOOT-INF/lib/log4j-core-2.14.1.jar")
