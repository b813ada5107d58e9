"""Manager load: N simulated agents over real HTTPS against a real manager on SQLite or PostgreSQL.

Starts ``hostward manager init`` + ``hostward manager serve`` (fresh data dir, fresh database), creates
an enrollment token through the REST API, enrolls N agents (each with its own machine id, name and
credential), then for ``--duration`` seconds every agent heartbeats at ``--interval`` (phases spread
uniformly), holds its command long poll (``GET /agent/v1/commands?wait=25``) open continuously, and
``--event-agents`` of them send AlarmEvent batches back to back (fingerprints repeat, so alarms merge).
The ingest rate is verified against the manager's database (sum of alarm occurrence counts).

Targets (issue 2): 10,000 agents at a 30 s heartbeat with p99 heartbeat latency < 100 ms on PostgreSQL,
>= 5,000 events/s ingested on PostgreSQL; report SQLite's limit (``--find-limit``).

Limitation: the load generator runs on the same machine as the manager and the database (2 cores
here), so its CPU is taken from the manager. It is kept lean (a minimal keep-alive HTTP/1.1 client on
uvloop's TLS, pre-serialised bodies, one loop per ``--client-procs`` process) and its own CPU use and
event-loop lag are printed: a client loop lag close to the latency percentiles means the numbers are
client-bound, not manager-bound. The CPU figure for PostgreSQL counts only the server processes that
existed when the window opened (backends connected later show under "other processes").

Every agent holds two connections: 10,000 agents need more descriptors than one process may have here
(hard limit 20,000), hence ``--agent-workers 2`` (``HOSTWARD_AGENT_WORKERS``, PostgreSQL only).

    .venv/bin/python bench/manager_load.py --db postgres --agents 10000 --agent-workers 2 --duration 60
    .venv/bin/python bench/manager_load.py --db postgres --agents 10000 --agent-workers 2 \
        --event-agents 8 --event-batch 200 --nice -10
    .venv/bin/python bench/manager_load.py --db sqlite --find-limit --steps 1000,2000,5000 --duration 30
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    PG_ADMIN_URL_DEFAULT,
    BenchError,
    CpuMeter,
    install_sigterm_as_interrupt,
    latency_line,
    postgres_database,
    postgres_processes,
    priority,
    running_manager,
    tail,
    temp_dir,
)
from _simagents import worker_main

P99_TARGET_MS = 100.0
EVENTS_TARGET = 5000.0
MAX_AGENTS = 50_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=1000, help="simulated agents (default 1000)")
    ap.add_argument("--interval", type=float, default=30.0, help="heartbeat interval, s (default 30)")
    ap.add_argument("--duration", type=float, default=120.0, help="measured window, s (default 120)")
    ap.add_argument(
        "--ramp", type=float, default=None, help="s over which agents connect (default agents/100, min 2)"
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="s before the window: agents connect, heartbeats start (default ramp + interval + 30)",
    )
    ap.add_argument(
        "--event-agents", type=int, default=0, help="agents also sending event batches (default 0)"
    )
    ap.add_argument("--event-batch", type=int, default=100, help="events per batch (default 100, max 500)")
    ap.add_argument(
        "--event-interval",
        type=float,
        default=0.0,
        help="pause between an event agent's batches, s (default 0: back to back)",
    )
    ap.add_argument("--fingerprints", type=int, default=20, help="distinct fingerprints per event agent")
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument(
        "--pg-admin-url", default=PG_ADMIN_URL_DEFAULT, help="PostgreSQL to create the throw-away database in"
    )
    ap.add_argument(
        "--agent-workers",
        type=int,
        default=1,
        help="agent-channel processes of the manager (HOSTWARD_AGENT_WORKERS; >1 needs PostgreSQL)",
    )
    ap.add_argument("--client-procs", type=int, default=0, help="load-generator processes (default N/6000)")
    ap.add_argument("--enroll-concurrency", type=int, default=16, help="concurrent enrollments per process")
    ap.add_argument("--poll-wait", type=int, default=25, help="long-poll wait parameter, s (default 25)")
    ap.add_argument("--timeout", type=float, default=30.0, help="request timeout, s (default 30)")
    ap.add_argument(
        "--no-keepalive",
        action="store_true",
        help="drop idle heartbeat connections after 5 s (httpx's default) instead of interval+10 s",
    )
    ap.add_argument(
        "--one-connection",
        action="store_true",
        help="send heartbeats between long polls on the poll's connection (1 connection per agent)",
    )
    ap.add_argument(
        "--find-limit", action="store_true", help="step N through --steps; report the largest passing"
    )
    ap.add_argument("--steps", default="250,500,1000,2000,5000,10000", help="agent counts for --find-limit")
    ap.add_argument(
        "--profile",
        metavar="PATH",
        help="record the manager with py-spy --gil during the window (collapsed stacks; pip install py-spy)",
    )
    ap.add_argument("--dump", metavar="PATH", help="write every heartbeat (start s, latency ms) as CSV")
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run manager, load generator and PostgreSQL at this niceness (e.g. -10 on a shared machine)",
    )
    ap.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (manager log, data)")
    args = ap.parse_args(argv)
    if not 1 <= args.agents <= MAX_AGENTS:
        ap.error(f"--agents must be 1..{MAX_AGENTS}")
    if not 0 <= args.event_agents <= args.agents:
        ap.error("--event-agents must be between 0 and --agents")
    if not 1 <= args.event_batch <= 500:
        ap.error("--event-batch must be 1..500")
    if args.duration <= 0 or args.interval <= 0 or args.duration > 24 * 3600:
        ap.error("--duration and --interval must be positive (duration <= 24 h)")
    if args.ramp is None:
        args.ramp = max(2.0, args.agents / 100)
    if args.warmup is None:
        # Every agent's first heartbeat and poll are full database requests (later ones are answered
        # from memory): the window opens once they and the ramp's TLS handshakes are done.
        args.warmup = args.ramp + args.interval + 30
    return args


def run_once(args: argparse.Namespace, agents: int) -> dict[str, Any]:
    """One complete run (fresh manager, fresh database); prints the report, returns the numbers."""
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir("hw-bench-load-", keep=args.keep))
        db_url = stack.enter_context(postgres_database(args.pg_admin_url)) if args.db == "postgres" else ""
        settings = {"heartbeat_interval": max(1, round(args.interval)), "long_poll_seconds": args.poll_wait}
        os.environ["HOSTWARD_AGENT_WORKERS"] = str(args.agent_workers)
        manager = stack.enter_context(running_manager(workdir, db_url, settings))
        try:
            return _drive(args, agents, manager)
        except BaseException:
            print(f"--- manager log (tail) ---\n{tail(manager.log_path)}", file=sys.stderr)
            raise


def _drive(args: argparse.Namespace, agents: int, manager: Any) -> dict[str, Any]:
    token, _fingerprint = manager.enrollment_token("manager_load benchmark")
    procs_n = args.client_procs or max(1, math.ceil(agents / 6000))
    procs_n = min(procs_n, agents)
    run_id = uuid.uuid4().hex[:8]
    ctx = mp.get_context("spawn")
    workers: list[tuple[Any, Any]] = []
    per = math.ceil(agents / procs_n)
    event_left = args.event_agents
    try:
        for w in range(procs_n):
            first, count = w * per, min(per, agents - w * per)
            ev = min(event_left, math.ceil(args.event_agents / procs_n))
            event_left -= ev
            cfg = {
                "first": first,
                "count": count,
                "run_id": run_id,
                "token": token,
                "agent_url": manager.agent_url,
                "ca_path": str(manager.ca_path),
                "interval": args.interval,
                "poll_wait": args.poll_wait,
                "timeout": args.timeout,
                "keepalive": not args.no_keepalive,
                "one_connection": args.one_connection,
                "event_agents": ev,
                "event_batch": args.event_batch,
                "event_interval": args.event_interval,
                "fingerprints": args.fingerprints,
                "enroll_concurrency": args.enroll_concurrency,
            }
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(cfg, child_end), daemon=True, name=f"loadgen-{w}")
            proc.start()
            workers.append((proc, parent_end))
        enrolled = [_receive(p, c, "enrolled", 120 + agents * 0.5) for p, c in workers]
        warm_wall = time.time() + 1.0
        for _, conn in workers:
            conn.send(("run", warm_wall, args.ramp, args.warmup, args.duration))
        meter = CpuMeter(
            {
                "manager": _manager_tree(manager),
                "postgres": postgres_processes() if args.db == "postgres" else [],
                "load generator": [_ps(p.pid) for p, _ in workers],
            }
        )
        time.sleep(max(0.0, warm_wall + args.warmup - time.time()))
        meter.start()
        window_start = time.time()
        profiler = _start_profiler(args, manager, workers)
        time.sleep(max(0.0, window_start + args.duration - time.time()))
        meter.stop()
        manager_rss = _rss(manager)
        if profiler is not None:
            try:
                profiler.wait(60)
            except Exception:
                profiler.kill()
        results = [_receive(p, c, "result", args.timeout + 120) for p, c in workers]
        # Only this run's event agents create alarms, and only inside the window (fresh database).
        ingested = _alarm_occurrences(manager)
    finally:
        # A closed pipe ends a worker still waiting for its next instruction (failure, Ctrl-C).
        for _, conn in workers:
            conn.close()
        for proc, _ in workers:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
    return report(
        args, agents, procs_n, manager, enrolled, results, meter, window_start, ingested, manager_rss
    )


def _manager_tree(manager: Any) -> list[Any]:
    """The manager process and its agent-channel worker processes (``--agent-workers``)."""
    import psutil

    root = manager.process()
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [root]


def _rss(manager: Any) -> int:
    """The manager's resident memory (bytes, all its processes) with every connection and poll open."""
    import psutil

    total = 0
    for proc in _manager_tree(manager):
        with contextlib.suppress(psutil.Error):
            total += int(proc.memory_info().rss)
    return total


def _start_profiler(args: argparse.Namespace, manager: Any, workers: list[tuple[Any, Any]]) -> Any:
    if not args.profile:
        return None
    import shutil
    import subprocess

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [
        exe,
        "record",
        "--pid",
        str(manager.proc.pid),
        "--duration",
        str(int(args.duration)),
        "--rate",
        "50",
        "--nonblocking",
        "--gil",
        "--format",
        "raw",
        "--output",
        args.profile,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _ps(pid: int | None) -> Any:
    import psutil

    return psutil.Process(pid)


def _receive(proc: Any, conn: Any, kind: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.poll(1.0):
            tag, payload = conn.recv()
            if tag != kind:
                raise BenchError(f"load generator sent {tag!r}, expected {kind!r}")
            return payload
        if not proc.is_alive():
            raise BenchError(f"load generator {proc.name} exited with {proc.exitcode} before {kind!r}")
    raise BenchError(f"load generator {proc.name}: no {kind!r} within {timeout:.0f} s")


def _alarm_occurrences(manager: Any) -> int:
    return int(manager.db_scalar("SELECT COALESCE(SUM(count), 0) FROM alarms") or 0)


def _errors(counter: Counter[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counter.most_common()) or "none"


def report(
    args: argparse.Namespace,
    agents: int,
    procs_n: int,
    manager: Any,
    enrolled: list[dict[str, Any]],
    results: list[dict[str, Any]],
    meter: CpuMeter,
    window_start: float,
    ingested: int,
    manager_rss: int = 0,
) -> dict[str, Any]:
    db = "postgresql" if args.db == "postgres" else "sqlite"
    n_enrolled = sum(e["enrolled"] for e in enrolled)
    enroll_s = max(e["finished"] for e in enrolled) - min(e["started"] for e in enrolled)
    servers = int(manager.db_scalar("SELECT COUNT(*) FROM servers") or 0)
    enroll_errors: Counter[str] = Counter()
    hb_errors: Counter[str] = Counter()
    poll_errors: Counter[str] = Counter()
    ev_errors: Counter[str] = Counter()
    acks: Counter[str] = Counter()
    hb_ms: list[float] = []
    lag_ms: list[float] = []
    ev_ms: list[float] = []
    loop_lag: list[float] = []
    for e in enrolled:
        enroll_errors.update(e["errors"])
    for r in results:
        hb_errors.update(r["hb_errors"])
        poll_errors.update(r["poll_errors"])
        ev_errors.update(r["ev_errors"])
        acks.update(r["ev_acks"])
        hb_ms += r["hb_ms"]
        lag_ms += r["hb_lag_ms"]
        ev_ms += r["ev_batch_ms"]
        loop_lag += r["loop_lag_ms"]
    scheduled = sum(r["hb_scheduled"] for r in results)
    hb_ok = len(hb_ms)
    target_rate = agents / args.interval
    rate = hb_ok / args.duration
    hb_text, hb = latency_line(hb_ms)
    if args.dump:
        with open(args.dump, "w") as fh:
            fh.write("start_s,latency_ms\n")
            for r in results:
                fh.writelines(f"{a:.3f},{m:.2f}\n" for a, m in zip(r["hb_at"], r["hb_ms"], strict=True))
    polls_at_end = sum(r["polls_open_at_end"] for r in results)
    samples = [sum(s) for s in zip(*(r["polls_open_samples"] for r in results), strict=False)]
    live = sum(r["live"] for r in results)
    last_ack = max((r["ev_last_ack_wall"] for r in results), default=0.0)
    ev_window = max(1e-6, (last_ack or window_start + args.duration) - window_start)
    accepted = acks.get("accepted", 0)
    ev_rate = ingested / ev_window if args.event_agents else 0.0
    client_cpu = sum(r["cpu_s"] for r in results) / args.duration
    polls_done = sum(r["poll_done"] for r in results)
    # Manager CPU per request answered in the window: stable under foreign load, unlike latencies.
    requests = hb_ok + polls_done + len(ev_ms)
    per_request_ms = 1000 * meter.cores.get("manager", 0.0) * args.duration / max(1, requests)

    print(
        f"\nmanager_load: db={db} agents={agents} interval={args.interval:g}s duration={args.duration:g}s "
        f"ramp={args.ramp:g}s warmup={args.warmup:g}s client_procs={procs_n} "
        f"event_agents={args.event_agents} event_batch={args.event_batch} nice={args.nice} "
        f"keepalive={'off' if args.no_keepalive else 'on'} "
        f"connections_per_agent={1 if args.one_connection else 2}"
    )
    print(
        f"  enrolled           {n_enrolled}/{agents} agents in {enroll_s:.1f} s "
        f"({n_enrolled / max(enroll_s, 1e-6):.1f}/s); servers in DB {servers}; "
        f"errors: {_errors(enroll_errors)}"
    )
    print(
        f"  heartbeats         {hb_ok} ok of {scheduled} scheduled in the window; achieved {rate:.1f}/s "
        f"vs target {target_rate:.1f}/s ({100 * rate / target_rate:.1f}%)"
    )
    print(f"  heartbeat latency  {hb_text}")
    print(f"  client start lag   {latency_line(lag_ms)[0]}  (heartbeat start vs its schedule)")
    print(f"  client loop lag    {latency_line(loop_lag)[0]}  (load generator saturation)")
    print(
        f"  errors             heartbeat: {_errors(hb_errors)}; poll: {_errors(poll_errors)}; "
        f"events: {_errors(ev_errors)}"
    )
    print(
        f"  long polls         open at end {polls_at_end}/{live}; "
        f"during window min {min(samples, default=0)} mean {sum(samples) / max(1, len(samples)):.0f}; "
        f"completed in window {polls_done}, "
        f"returned early {sum(r['poll_early'] for r in results)}"
    )
    if args.event_agents:
        print(
            f"  events             acks {_errors(acks)}; stored occurrences (DB) {ingested} "
            f"({'matches' if ingested == accepted else 'DIFFERS from'} accepted acks {accepted}) over "
            f"{ev_window:.1f} s = {ev_rate:.0f} events/s; batch latency {latency_line(ev_ms)[0]}"
        )
    print(f"  cpu (window)       {meter.line()} (load generator by rusage {client_cpu:.2f} cores)")
    print(
        f"  manager memory     RSS {manager_rss / 2**20:.0f} MiB at the end of the window "
        f"({manager_rss / max(1, agents) / 1024:.1f} KiB per agent)"
    )
    if requests:
        print(
            f"  manager cpu/req    {per_request_ms:.2f} ms per request answered in the window "
            f"({requests} requests: heartbeats, polls, event batches)"
        )

    hb_error_total = sum(hb_errors.values())
    passed = (
        n_enrolled == agents
        and hb["p99"] < P99_TARGET_MS
        and rate >= 0.99 * target_rate
        and hb_error_total <= 0.001 * max(1, scheduled)
        and polls_at_end >= 0.99 * agents
    )
    ev_pass = not args.event_agents or ev_rate >= EVENTS_TARGET
    verdict = "PASS" if passed and ev_pass else "FAIL"
    print(
        f"SUMMARY manager_load db={db} agents={agents} enrolled={n_enrolled} interval={args.interval:g}s "
        f"hb_rate={rate:.1f}/s({100 * rate / target_rate:.1f}%) p50={hb['p50']:.1f}ms p95={hb['p95']:.1f}ms "
        f"p99={hb['p99']:.1f}ms max={hb['max']:.1f}ms hb_errors={hb_error_total} "
        f"poll_errors={sum(poll_errors.values())} polls_open={polls_at_end}/{agents} "
        f"events_per_s={ev_rate:.0f} manager_rss_mib={manager_rss / 2**20:.0f} "
        f"manager_cores={meter.cores.get('manager', 0.0):.2f} result={verdict} "
        f"(targets: p99<{P99_TARGET_MS:.0f}ms, rate>=99%, errors<=0.1%"
        f"{f', events>={EVENTS_TARGET:.0f}/s' if args.event_agents else ''})"
    )
    sys.stdout.flush()
    return {"agents": agents, "passed": passed, "ev_pass": ev_pass, "p99": hb["p99"], "events_per_s": ev_rate}


def find_limit(args: argparse.Namespace) -> int:
    steps = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    if not steps or steps[0] < 1 or steps[-1] > MAX_AGENTS:
        raise BenchError(f"--steps must be agent counts within 1..{MAX_AGENTS}")
    best = 0
    for n in steps:
        outcome = run_once(args, n)
        if not outcome["passed"]:
            break
        best = n
    db = "postgresql" if args.db == "postgres" else "sqlite"
    print(
        f"LIMIT manager_load db={db} interval={args.interval:g}s largest_passing_agents={best} "
        f"(steps {','.join(map(str, steps))}; pass = p99<{P99_TARGET_MS:.0f}ms, rate>=99%, errors<=0.1%)"
    )
    return 0 if best else 3


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_sigterm_as_interrupt()
    try:
        with priority(args.nice, with_postgres=args.db == "postgres"):
            if args.find_limit:
                rc = find_limit(args)
                return rc if args.strict else 0
            outcome = run_once(args, args.agents)
        return 3 if args.strict and not (outcome["passed"] and outcome["ev_pass"]) else 0
    except BenchError as exc:
        print(f"manager_load: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("manager_load: interrupted; cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
