"""Generated from the shipped baseline policies: every check has annotated samples that pass and fail,
and running the check on each sample's file tree gives the annotated result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hostward.agent.baseline import HostView, build_sample_tree, default_policy_dir, load_policies, run_policy
from hostward.agent.baseline.samples import sample_needs_root
from tests.conftest import need

POLICIES, ERRORS = load_policies([default_policy_dir()])
CASES = [
    pytest.param(policy, check, i, sample, id=f"{check.id}-{i}-{sample.get('expect')}")
    for policy in POLICIES
    for check in policy.checks
    for i, sample in enumerate(policy.samples.get(check.id, []))
]


def test_shipped_policies_load_without_errors() -> None:
    assert ERRORS == []
    assert {p.id for p in POLICIES} == {
        "hostward_ssh",
        "hostward_password",
        "hostward_permissions",
        "hostward_kernel_network",
        "hostward_services",
        "hostward_nginx",
    }


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.id)
def test_every_check_has_a_passing_and_a_failing_sample(policy) -> None:  # type: ignore[no-untyped-def]
    for check in policy.checks:
        expects = {s.get("expect") for s in policy.samples.get(check.id, [])}
        assert {"passed", "failed"} <= expects, f"{policy.id}/{check.id} needs passed and failed samples"
        assert expects <= {"passed", "failed", "not_applicable"}


def test_check_ids_are_unique_across_policies() -> None:
    ids = [c.id for p in POLICIES for c in p.checks]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("policy", "check", "index", "sample"), CASES)
def test_sample(policy, check, index, sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if sample_needs_root(sample):
        need("root", "the sample sets file ownership")
    build_sample_tree(tmp_path, sample)
    # The whole policy path (requirements included) on a policy reduced to this one check.
    run = run_policy(replace(policy, checks=(check,)), HostView(root=tmp_path))
    result = run.results[0]
    assert result.result == sample["expect"], (
        f"{check.id} sample {index} ({sample.get('note', '')}): got {result.result}: {result.reason}"
    )
    assert result.reason


def test_sample_paths_are_host_absolute() -> None:
    for policy in POLICIES:
        for check in policy.checks:
            for sample in policy.samples.get(check.id, []):
                for name in [
                    *(sample.get("files") or {}),
                    *(sample.get("links") or {}),
                    *(sample.get("dirs") or []),
                ]:
                    assert str(name).startswith("/"), f"{check.id}: sample path {name} must be absolute"
