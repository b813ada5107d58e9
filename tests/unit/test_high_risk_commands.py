"""Generated from content/process/high_risk_commands.yaml: every pattern has samples it matches and
negatives that no default pattern matches (STYLE §7)."""

from __future__ import annotations

import pytest

from hostward.agent.detectors.highrisk import DEFAULT_PATTERNS_FILE, HighRiskCommandDetector, load_patterns

PATTERNS = load_patterns(DEFAULT_PATTERNS_FILE)
IDS = [p.id for p in PATTERNS]


def test_patterns_load() -> None:
    assert len(PATTERNS) >= 10 and len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("pattern_id", IDS)
def test_pattern_has_samples_and_negatives(pattern_id: str) -> None:
    pattern = next(p for p in PATTERNS if p.id == pattern_id)
    assert pattern.samples, f"{pattern_id}: no sample"
    assert pattern.negative, f"{pattern_id}: no negative"
    assert pattern.description


@pytest.mark.parametrize("pattern_id", IDS)
def test_samples_match_their_pattern(pattern_id: str) -> None:
    pattern = next(p for p in PATTERNS if p.id == pattern_id)
    for sample in pattern.samples:
        assert pattern.regex.search(sample), f"{pattern_id} does not match {sample!r}"


@pytest.mark.parametrize("pattern_id", IDS)
def test_negatives_match_no_default_pattern(pattern_id: str) -> None:
    detector = HighRiskCommandDetector(patterns=PATTERNS)
    pattern = next(p for p in PATTERNS if p.id == pattern_id)
    for sample in pattern.negative:
        assert [p.id for p in detector.match(sample)] == [], sample
