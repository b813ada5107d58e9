"""Generated from the bundled YARA rules: every rule has samples, positives match exactly their rule,
negatives match nothing (STYLE §7; sample layout in tests/samples/yara/README.md)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yara

from hostward.agent.malware.detection import FAMILY_ALARMS, family_alarm
from hostward.agent.malware.rules import BUNDLED_DIR, BUNDLED_NS, FAMILIES, SEVERITY_ORDER, load_rules
from hostward.wire import ALARM_CLASSES
from tests.samples.yara.built import built_samples

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples" / "yara"
RULESET = load_rules()
BUNDLED = {info.name: info for info in RULESET.infos.values() if info.namespace.startswith(BUNDLED_NS + "/")}
RULE_NAMES = sorted(BUNDLED)
# Positives that legitimately match more than their own rule (none today; add with a reason).
EXPECT_ALSO: dict[str, set[str]] = {}


def _file_samples() -> dict[str, dict[str, list[tuple[str, bytes]]]]:
    out: dict[str, dict[str, list[tuple[str, bytes]]]] = {}
    for d in sorted(p for p in SAMPLES_DIR.iterdir() if p.is_dir() and not p.name.startswith("__")):
        entry = out.setdefault(d.name, {"positive": [], "negative": []})
        for f in sorted(d.iterdir()):
            for kind in ("positive", "negative"):
                if f.name.startswith(kind):
                    entry[kind].append((f"{d.name}/{f.name}", f.read_bytes()))
    return out


def _all_samples() -> dict[str, dict[str, list[tuple[str, bytes]]]]:
    merged = _file_samples()
    for rule, kinds in built_samples().items():
        entry = merged.setdefault(rule, {"positive": [], "negative": []})
        for kind, items in kinds.items():
            entry[kind].extend((f"built:{rule}/{name}", data) for name, data in items)
    return merged


SAMPLES = _all_samples()


def _matches(data: bytes) -> set[str]:
    return {m.rule for m in RULESET.rules.match(data=data) if m.namespace.startswith(BUNDLED_NS + "/")}


def test_bundled_rules_exist_and_compile_cleanly() -> None:
    assert len(RULE_NAMES) >= 20
    assert RULESET.errors == []
    for path in sorted(BUNDLED_DIR.glob("*.yar")):
        compiled = yara.compile(filepath=str(path))
        assert compiled.warnings == [], f"{path.name}: {compiled.warnings}"


def test_bundled_rules_import_no_per_file_heavy_module() -> None:
    # "elf", "pe", "dotnet", "magic" build a large object tree for every scanned file (0.1-0.2 ms each,
    # ELF or not): bundled rules read headers with uintN() instead; "math" is cheap.
    for path in sorted(BUNDLED_DIR.glob("*.yar")):
        text = path.read_text()
        for module in ("elf", "pe", "dotnet", "magic", "cuckoo"):
            assert f'import "{module}"' not in text, f"{path.name} imports {module}"


@pytest.mark.skipif(shutil.which("yara") is None, reason="yara command line tool not installed")
def test_bundled_rules_compile_with_the_yara_cli() -> None:
    # the benchmark runs the same rules through the distribution's (older) yara
    files = [str(p) for p in sorted(BUNDLED_DIR.glob("*.yar"))]
    proc = subprocess.run(
        ["yara", "--fail-on-warnings", *files, "/dev/null"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_every_sample_directory_names_a_rule() -> None:
    orphans = sorted(set(SAMPLES) - set(RULE_NAMES))
    assert orphans == [], f"samples for rules that do not exist: {orphans}"


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_rule_meta(rule: str) -> None:
    info = BUNDLED[rule]
    assert info.family in FAMILIES
    assert info.severity in SEVERITY_ORDER
    assert len(info.description) >= 20
    assert family_alarm(info.family) in ALARM_CLASSES


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_rule_has_positive_and_negative_samples(rule: str) -> None:
    entry = SAMPLES.get(rule, {})
    assert entry.get("positive"), f"{rule} has no positive sample"
    assert entry.get("negative"), f"{rule} has no negative sample"


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_positive_samples_match_exactly_their_rule(rule: str) -> None:
    for name, data in SAMPLES.get(rule, {}).get("positive", []):
        assert _matches(data) == {rule} | EXPECT_ALSO.get(rule, set()), name


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_negative_samples_match_no_rule(rule: str) -> None:
    for name, data in SAMPLES.get(rule, {}).get("negative", []):
        assert _matches(data) == set(), name


def test_built_module_matches_nothing() -> None:
    source = (SAMPLES_DIR / "built.py").read_bytes()
    assert _matches(source) == set()


def test_every_family_maps_to_an_alarm_class() -> None:
    for family in FAMILIES:
        assert FAMILY_ALARMS.get(family, "malware_1001") in ALARM_CLASSES
    assert family_alarm("webshell") == "webshell_0001"
    assert family_alarm("mining") == "network_1001"
    assert family_alarm("something-new") == "malware_1001"
