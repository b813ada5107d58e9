"""Agent footprint: RSS and CPU of a real, idle, enrolled agent over ``--duration`` seconds.

Starts a real manager (SQLite), creates an enrollment token, runs ``hostward agent enroll`` and then
``hostward agent run --state-dir ... --name bench``, and samples the agent process and its children
with psutil once a second. The first ``--settle`` seconds (imports, first asset collection, first
policy fetch) are reported separately and left out of the idle figures.

Targets (issue 2): an idle agent stays under 60 MB RSS and 1% of one CPU.

    .venv/bin/python bench/agent_footprint.py --duration 300
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    HOSTWARD,
    BenchError,
    install_sigterm_as_interrupt,
    running_manager,
    start_process,
    stop_process,
    tail,
    temp_dir,
)

RSS_TARGET_MB = 60.0
CPU_TARGET_PCT = 1.0
MB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=300.0, help="measured idle time, s (default 300)")
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        help="s after start left out of the idle figures (default min(30, duration/5))",
    )
    ap.add_argument("--interval", type=int, default=10, help="manager heartbeat interval, s (default 10)")
    ap.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state)")
    args = ap.parse_args(argv)
    if not 1 <= args.duration <= 24 * 3600:
        ap.error("--duration must be 1..86400")
    if args.settle is None:
        args.settle = min(30.0, args.duration / 5)
    return args


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _sample(root: psutil.Process, seen: dict[int, psutil.Process]) -> tuple[float, float]:
    """(RSS bytes of the tree now, CPU seconds used so far by the tree incl. exited children we saw)."""
    rss = 0.0
    for p in _tree(root):
        seen.setdefault(p.pid, p)
    cpu = 0.0
    for pid, p in list(seen.items()):
        try:
            with p.oneshot():
                t = p.cpu_times()
                cpu += t.user + t.system + t.children_user + t.children_system
                if p.is_running():
                    rss += p.memory_info().rss
        except psutil.NoSuchProcess:
            seen.pop(pid, None)  # its time is in the parent's children_* once reaped
        except psutil.Error:
            pass
    return rss, cpu


def measure(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir("hw-bench-agent-", keep=args.keep))
        manager = stack.enter_context(running_manager(workdir, "", {"heartbeat_interval": args.interval}))
        token, fingerprint = manager.enrollment_token("agent_footprint benchmark")
        state_dir = workdir / "agent"
        import subprocess

        enroll = subprocess.run(
            [
                *HOSTWARD,
                "agent",
                "enroll",
                "--manager",
                manager.agent_url,
                "--token",
                token,
                "--ca-fingerprint",
                fingerprint,
                "--state-dir",
                str(state_dir),
                "--name",
                "bench",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if enroll.returncode != 0:
            raise BenchError(f"agent enroll failed ({enroll.returncode}): {enroll.stderr.strip()[-1500:]}")
        log_path = workdir / "agent.log"
        agent = start_process([*HOSTWARD, "agent", "run", "--state-dir", str(state_dir)], log_path)
        stack.callback(stop_process, agent)
        root = psutil.Process(agent.pid)
        seen: dict[int, psutil.Process] = {}
        t_start = time.monotonic()
        end = t_start + args.settle + args.duration
        settle_rss: list[float] = []
        rss: list[float] = []
        cpu_at_idle_start: float | None = None
        idle_start = t_start + args.settle
        cpu_now = 0.0
        next_tick = t_start
        while (now := time.monotonic()) < end:
            if agent.poll() is not None:
                raise BenchError(f"agent exited with {agent.returncode}:\n{tail(log_path)}")
            r, cpu_now = _sample(root, seen)
            if now < idle_start:
                settle_rss.append(r)
            else:
                if cpu_at_idle_start is None:
                    cpu_at_idle_start, idle_start = cpu_now, now
                rss.append(r)
            next_tick += 1.0
            time.sleep(max(0.0, next_tick - time.monotonic()))
        _, cpu_now = _sample(root, seen)
        elapsed = time.monotonic() - idle_start
        if not rss or cpu_at_idle_start is None:
            raise BenchError("no idle samples taken")
        cpu_pct = 100.0 * (cpu_now - cpu_at_idle_start) / elapsed
        online = manager.db_scalar("SELECT agent_status FROM servers WHERE agent_name = 'bench'")
        mean_mb, max_mb = sum(rss) / len(rss) / MB, max(rss) / MB
        rss_ok, cpu_ok = max_mb < RSS_TARGET_MB, cpu_pct < CPU_TARGET_PCT
        verdict = "PASS" if rss_ok and cpu_ok else "FAIL"
        print(
            f"\nagent_footprint: duration={args.duration:g}s settle={args.settle:g}s "
            f"heartbeat_interval={args.interval}s samples={len(rss)} processes_seen={len(seen)}"
        )
        if settle_rss:
            print(f"  start-up (first {args.settle:g} s)  max RSS {max(settle_rss) / MB:.1f} MB")
        print(
            f"  idle RSS            mean {mean_mb:.1f} MB  max {max_mb:.1f} MB  "
            f"(target < {RSS_TARGET_MB:.0f} MB: {'PASS' if rss_ok else 'FAIL'})"
        )
        print(
            f"  idle CPU            mean {cpu_pct:.2f}% of one core over {elapsed:.0f} s  "
            f"(target < {CPU_TARGET_PCT:g}%: {'PASS' if cpu_ok else 'FAIL'})"
        )
        print(f"  manager sees agent  {online}")
        print(
            f"SUMMARY agent_footprint rss_mean={mean_mb:.1f}MB rss_max={max_mb:.1f}MB "
            f"cpu_mean={cpu_pct:.2f}% duration={elapsed:.0f}s result={verdict} "
            f"(targets: rss<{RSS_TARGET_MB:.0f}MB, cpu<{CPU_TARGET_PCT:g}%)"
        )
        sys.stdout.flush()
        return 0 if verdict == "PASS" or not args.strict else 3


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_sigterm_as_interrupt()
    try:
        return measure(args)
    except BenchError as exc:
        print(f"agent_footprint: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("agent_footprint: interrupted; cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
