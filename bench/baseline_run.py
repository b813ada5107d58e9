"""Baseline run time: our shipped policies against this machine's real /etc, several rounds.

Each round loads the policies and runs every check in a fresh HostView (no cache carried over), as a
scheduled scan does. Target (issue 6): a full baseline run < 10 s.

    .venv/bin/python bench/baseline_run.py [--rounds 5] [--strict]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hostward.agent.baseline import run_baseline

TARGET_S = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--strict", action="store_true", help="exit 3 when the target is missed")
    args = parser.parse_args()
    times = []
    report = None
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        report = run_baseline()
        times.append(time.perf_counter() - t0)
    assert report is not None
    c = report.counts()
    slowest = max(report.runs, key=lambda r: r.seconds)
    print(
        f"policies {len(report.runs)}  checks {len(report.results)}  passed {c['passed']}  "
        f"failed {c['failed']}  "
        f"not applicable {c['not_applicable']}  errors {len(report.errors)}"
    )
    print(
        f"run time over {args.rounds} rounds: median {statistics.median(times):.3f} s  "
        f"max {max(times):.3f} s  "
        f"(slowest policy {slowest.policy_id} {slowest.seconds:.3f} s)"
    )
    worst = max(times)
    ok = worst < TARGET_S and not report.errors
    print(
        f"SUMMARY baseline_run checks={len(report.results)} max_s={worst:.3f} target_s={TARGET_S} "
        f"ratio={TARGET_S / max(worst, 1e-9):.1f}x result={'PASS' if ok else 'FAIL'}"
    )
    return 3 if (args.strict and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
