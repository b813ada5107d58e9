"""Process events through the agent's malware/process-threat component at 2,000 execs/s.

The same load as part 2 of ``yara_vs_cli.py`` (its spawners: ``/bin/true`` at ``--exec-rate`` per second
for ``--exec-seconds``), but received by the whole component the agent runs (``MalwareRunner``): the
proc connector, enrichment from /proc, the six process/file detectors with the default policies on,
and every executable queued for the malware scanner (``realtime_exec``) with a real rule set and a real
outbox. Counted: exec events of the spawners' children received (through a tap on the collector), events
the collector dropped or lost, the component's exec queue (queued, answered from its verdict cache,
dropped), and how long after the burst the enrichment queue was empty again. Target: nothing lost.

    .venv/bin/python bench/procthreats_runner.py [--exec-rate 2000] [--exec-seconds 5] [--spawners 8]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hostward.agent.collectors.proccn import EV_EXEC, EV_FORK, ProcEvent
from hostward.agent.malwarerunner import MalwareRunner
from hostward.agent.transport.outbox import Outbox
from hostward.core.clock import SystemClock
from hostward.wire import PolicyBundle, PolicyState
from yara_vs_cli import spawner_cmd

POLICIES = (
    "malware_detection",
    "reverse_shell",
    "high_risk_command",
    "process_privilege_escalation",
    "file_privilege_escalation",
    "abnormal_shell",
    "crontab_check",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exec-rate", type=float, default=2000.0)
    ap.add_argument("--exec-seconds", type=float, default=5.0)
    ap.add_argument("--spawners", type=int, default=8)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("skipped: the proc connector needs root")
        return 0
    work = Path(tempfile.mkdtemp(prefix="hw-procbench-"))
    state = work / "state"
    state.mkdir(mode=0o700)
    outbox = Outbox.open(state)
    runner = MalwareRunner(state, outbox, SystemClock(), proc_mode="connector")
    bundle = PolicyBundle(
        version=1,
        group_id="g",
        group_name="g",
        edition="premium",
        protection=True,
        policies={k: PolicyState(enabled=True) for k in POLICIES},
    )
    runner.configure(bundle)
    runner.step()  # rules, collector, first collections
    collector = runner.procs.collector
    assert collector is not None and collector.ready.wait(30)
    runner.start()
    spawners = [
        subprocess.Popen(
            spawner_cmd(work, args.exec_rate / args.spawners, args.exec_seconds),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.spawners)
    ]
    for sp in spawners:
        assert sp.stdout is not None and sp.stdout.readline().strip() == "ready"
    spawner_pids = {sp.pid for sp in spawners}
    children: set[int] = set()
    seen = [0]

    def tap(ev: ProcEvent) -> None:
        if ev.what == EV_FORK and ev.parent_tgid in spawner_pids:
            children.add(ev.tgid)
        elif ev.what == EV_EXEC and ev.tgid in children:
            seen[0] += 1

    collector.add_tap(tap)
    before = dict(runner.counters)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for sp in spawners:
        assert sp.stdin is not None
        sp.stdin.write("go\n")
        sp.stdin.flush()
    spawned, took = 0, 0.0
    for sp in spawners:
        assert sp.stdout is not None
        line = sp.stdout.readline().split()
        sp.wait(120)
        spawned += int(line[0])
        took = max(took, float(line[1]))
    burst_end = time.perf_counter()
    deadline = time.monotonic() + 30
    while (seen[0] < spawned or collector._queue.qsize() > 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    drained = time.perf_counter() - burst_end
    wall = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    st = collector.stats
    counters = {
        k: runner.counters[k] - before.get(k, 0)
        for k in ("exec_queued", "cached", "scanned", "queue_dropped")
    }
    runner.stop()
    outbox.close()
    shutil.rmtree(work, ignore_errors=True)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    lost = spawned - seen[0]
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(
        f"spawned {spawned:,} /bin/true in {took:.2f} s = {spawned / took:,.0f} execs/s "
        f"({args.spawners} spawners)"
    )
    print(f"exec events of those children received: {seen[0]:,}; lost {lost}")
    print(f"enrichment queue empty {drained:.2f} s after the burst")
    print(f"collector: {st.as_dict()}")
    print(f"component exec queue: {counters}")
    print(f"process CPU {100 * cpu / wall:.1f}% of one core over {wall:.1f} s")
    ok = lost == 0 and st.lost_overruns == 0 and st.dropped == 0 and counters["queue_dropped"] == 0
    print("RESULT", "met" if ok else "NOT met", f"execs_per_s={spawned / took:.0f} lost={lost}")
    return 0 if ok else 3


if __name__ == "__main__":
    raise SystemExit(main())
