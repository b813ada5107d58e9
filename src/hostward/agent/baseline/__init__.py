"""Baseline (configuration) checks: our YAML policies and Wazuh SCA policy files, run on a host root.

Entry points: :func:`run_baseline` (load + run, returns a :class:`BaselineReport`),
:func:`load_policies`, :func:`run_policy`, :class:`HostView` (the injectable file-system root).
"""

from hostward.agent.baseline.engine import (
    PolicyLoadError,
    default_policy_dir,
    evaluate_check,
    load_policies,
    load_policy_file,
    parse_policy_text,
    run_baseline,
    run_policy,
)
from hostward.agent.baseline.host import HostView, run_command
from hostward.agent.baseline.model import BaselineReport, CheckResult, Policy, PolicyError, PolicyRun
from hostward.agent.baseline.samples import build_sample_tree

__all__ = [
    "BaselineReport",
    "CheckResult",
    "HostView",
    "Policy",
    "PolicyError",
    "PolicyLoadError",
    "PolicyRun",
    "build_sample_tree",
    "default_policy_dir",
    "evaluate_check",
    "load_policies",
    "load_policy_file",
    "parse_policy_text",
    "run_baseline",
    "run_command",
    "run_policy",
]
