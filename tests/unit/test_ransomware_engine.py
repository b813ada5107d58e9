"""Ransomware policy, bait files, rotation, the behaviour rule and isolation targets (no root)."""

from __future__ import annotations

import io
import os
import random
import zipfile
from pathlib import Path

import pytest

from hostward.agent.ransomware import PolicyError, RansomwarePolicy, RateRule, plant, rotate_if_due, validate
from hostward.agent.ransomware.bait import GENERATORS, bait_name
from hostward.agent.ransomware.monitor import isolation_target


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"protected_dirs": [f"/d{i}" for i in range(21)]}, "at most 20"),
        ({"excluded_dirs": [f"/d{i}" for i in range(21)]}, "at most 20"),
        ({"protected_dirs": ["rel"]}, "absolute"),
        ({"action": "kill"}, "alarm, alarm_and_isolate"),
        ({"file_types": ["do cx"]}, "letters or digits"),
        ({"rate_files": 0}, "rate_files"),
    ],
)
def test_policy_validation(kw: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        validate(RansomwarePolicy(**kw))  # type: ignore[arg-type]


def test_protected_type_matches_any_suffix() -> None:
    p = RansomwarePolicy(file_types=["docx", "sql"])
    assert p.protected_type("/x/report.docx") and p.protected_type("/x/report.docx.locked")
    assert not p.protected_type("/x/report.locked") and not p.protected_type("/x/docx")


def test_bait_contents_have_real_headers() -> None:
    rng = random.Random(3)
    for ext in ("xlsx", "docx"):
        with zipfile.ZipFile(io.BytesIO(GENERATORS[ext](rng))) as z:
            assert "[Content_Types].xml" in z.namelist() and z.testzip() is None
    pdf = GENERATORS["pdf"](rng)
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF") and b"startxref" in pdf
    jpg = GENERATORS["jpg"](rng)
    assert jpg[:4] == b"\xff\xd8\xff\xe0" and jpg[6:10] == b"JFIF" and jpg.endswith(b"\xff\xd9")
    assert b"\xff\xd9" not in jpg[:-2]
    assert GENERATORS["sql"](rng).startswith(b"-- MySQL dump")
    for ext in GENERATORS:
        name = bait_name(ext, rng)
        assert name.startswith(".") and name.endswith(f".{ext}")


def test_baits_planted_in_protected_and_random_dirs_never_excluded(tmp_path: Path) -> None:
    top = tmp_path / "data"
    for sub in ("a", "a/deep", "b", "secret", "secret/inner"):
        (top / sub).mkdir(parents=True)
    policy = RansomwarePolicy(protected_dirs=[str(top)], excluded_dirs=[str(top / "secret")])
    baits = plant(policy, random.Random(5))
    dirs = {os.path.dirname(b.path) for b in baits}
    assert str(top) in dirs and len(dirs) > 1
    assert not any(b.path.startswith(str(top / "secret")) for b in baits)
    assert all(os.path.basename(b.path).startswith(".") for b in baits)
    assert len([b for b in baits if os.path.dirname(b.path) == str(top)]) == len(GENERATORS)


def test_rotation_every_12_hours(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    policy = RansomwarePolicy(protected_dirs=[str(tmp_path / "d")])
    state = str(tmp_path / "state.json")
    first, rotated = rotate_if_due(policy, state, 1000.0)
    assert rotated
    same, rotated = rotate_if_due(policy, state, 1000.0 + 11 * 3600)
    assert not rotated and same == first
    new, rotated = rotate_if_due(policy, state, 1000.0 + 12 * 3600)
    assert rotated and {b.path for b in new} != {b.path for b in first}
    assert not any(os.path.exists(b.path) for b in first if b.path not in {n.path for n in new})
    policy.bait = False
    none, _ = rotate_if_due(policy, state, 1000.0 + 12 * 3600 + 1)
    assert none == [] and not any(os.path.exists(b.path) for b in new)


def test_rate_rule_fires_once_above_threshold() -> None:
    rule = RateRule(n=20, window_s=10.0)
    for i in range(20):
        assert rule.feed(42, f"/d/f{i}", float(i) * 0.1) is None
    assert rule.feed(42, "/d/f0", 2.5) is None  # same file again does not count twice
    fired = rule.feed(42, "/d/f20", 3.0)
    assert fired is not None and len(fired) == 21
    assert rule.feed(42, "/d/f21", 3.1) is None
    slow = RateRule(n=20, window_s=10.0)
    assert all(slow.feed(7, f"/d/f{i}", i * 1.0) is None for i in range(40))


def test_isolation_target() -> None:
    assert isolation_target("/usr/bin/python3.11", ["python3", "/tmp/enc.py", "/srv"]) == ""  # not a file
    assert isolation_target("/usr/bin/python3.11", ["python3", "-c", "code"]) == ""
    assert isolation_target("/usr/bin/python3", ["python3", "-u", __file__]) == os.path.abspath(__file__)
    assert isolation_target("/opt/evil/locker", ["/opt/evil/locker", "/srv"]) == "/opt/evil/locker"
    assert isolation_target("/usr/bin/bash", ["bash", __file__]) == os.path.abspath(__file__)
