"""Malware scanning: hostward's scanner against the ``yara`` command line tool; process-event throughput.

Part 1 (issue 5 targets). The same rules (our bundled set) over the same tree: the deterministic ~1.2 GB,
100,000-file tree of the FIM benchmarks (``_fimtree``; symlink loops included, hence ``-N``) built under
``--base`` (default /var/tmp/hostward-bench/yaratree), plus a few detection samples so both tools have
something to find. Timed as whole processes (start-up, rule loading, scan), warm page cache, median of
``--runs`` after one unmeasured warm-up:

- ``yara -r -N -w -p 2 RULES... TREE`` (two scan threads);
- ours, first scan (empty results cache, ``--threads`` workers, default 2);
- ours, re-scan of the unchanged tree with the results cache.

Targets: first scan >= 0.9x the CLI's MB/s; re-scan >= 10x faster than the CLI. Both tools must report
the same matching files. A throttled scan (one worker, ``--throttle-share``) reports its CPU use against the
agent budget (20% of one CPU) and its peak RSS (budget 150 MB).

Part 2. Process events: a helper spawns ``/bin/true`` at ``--exec-rate`` per second (default 2,000) for
``--exec-seconds``; the proc-connector collector runs with the process detectors attached, and its tap
counts the exec events of the helper's children (attributed through fork events). Target: no event lost.

    .venv/bin/python bench/yara_vs_cli.py [--runs 5] [--threads 2] [--small] [--strict]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _fimtree import ADDED_DIR, ensure_tree

DEFAULT_BASE = Path("/var/tmp/hostward-bench/yaratree")
RULES_CACHE = Path(tempfile.gettempdir()) / f"hw-yara-bench-rules-{os.getuid()}"
TARGET_FIRST = 0.9
TARGET_RESCAN = 10.0
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def rule_files() -> list[str]:
    from hostward.agent.malware.rules import BUNDLED_DIR

    return [str(p) for p in sorted(BUNDLED_DIR.glob("*.yar"))]


def add_samples(root: Path) -> set[str]:
    """Detection samples under ``root/zz-added`` (removed again by the next ensure_tree)."""
    from tests.samples.yara.built import built_samples

    d = root / ADDED_DIR
    d.mkdir(exist_ok=True)
    paths = set()
    (d / "eicar.com").write_bytes(EICAR)
    paths.add(str(d / "eicar.com"))
    for rule, kinds in sorted(built_samples().items()):
        name, data = kinds["positive"][0]
        p = d / f"{rule}-{name}"
        p.write_bytes(data)
        paths.add(str(p))
    return paths


def small_tree(base: Path) -> tuple[Path, int, int]:
    import random

    root = base / "tree"
    rng = random.Random(5)
    total = files = 0
    for a in range(20):
        for b in range(10):
            d = root / f"d{a}" / f"s{b}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(10):
                size = min(int(rng.lognormvariate(7.4, 1.5)), 2_000_000)
                (d / f"f{i}.dat").write_bytes(rng.randbytes(size))
                total += size
                files += 1
    (root / "d0" / "loop").symlink_to("..")
    return root, files, total


def tree_size(root: Path) -> tuple[int, int]:
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if os.path.isfile(p) and not os.path.islink(p):
                files += 1
                total += st.st_size
    return files, total


def timed(cmd: list[str]) -> tuple[float, str, float, int]:
    """(wall s, stdout, child CPU s, child peak RSS KiB) of one whole-process run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{cmd[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, done.stdout, cpu, after.ru_maxrss


def cli_cmd(root: Path) -> list[str]:
    return ["yara", "-r", "-N", "-w", "-p", "2", *rule_files(), str(root)]


def ours_cmd(root: Path, cache: Path, threads: int, cpu_share: float | None = None) -> list[str]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        str(root),
        "--cache",
        str(cache),
        "--threads",
        str(threads),
        "--rules-cache",
        str(RULES_CACHE),
    ]
    if cpu_share is not None:
        cmd += ["--cpu-share", str(cpu_share)]
    return cmd


def worker(args: argparse.Namespace) -> int:
    """One whole-process scan (what the timing measures): load rules (compile cache), scan, print JSON."""
    from hostward.agent.malware import MalwareScanner, ResultCache, ScanOptions, load_rules

    # the compiled rules are cached like the agent caches them (shared by all runs, warmed by the warm-up)
    ruleset = load_rules(cache_dir=Path(args.rules_cache))
    options = ScanOptions(workers=args.threads, cpu_share=args.cpu_share)
    cache = ResultCache(args.cache)
    report = MalwareScanner(ruleset, cache=cache, options=options).scan([args.worker])
    cache.close()
    print(json.dumps({"stats": report.stats.as_dict(), "hits": sorted(d.path for d in report.detections)}))
    return 0


def summarize(label: str, results: list[tuple[float, str, float, int]]) -> tuple[float, str, float]:
    """Median wall, the stdout and CPU of the median run; prints the line."""
    walls = [r[0] for r in results]
    mid = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]
    spread = f" [{min(walls):.3f}-{max(walls):.3f}]" if len(walls) > 1 else ""
    print(f"  {label:<34} {statistics.median(walls):8.3f} s (median of {len(walls)}){spread}")
    return statistics.median(walls), results[mid][1], results[mid][2]


def cli_hits(stdout: str) -> set[str]:
    hits = set()
    for line in stdout.splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2:
            hits.add(parts[1])
    return hits


def scan_part(args: argparse.Namespace, work: Path) -> tuple[bool, str]:
    if args.small:
        root, files, _total = small_tree(work / "small")
    else:
        tree = ensure_tree(args.base)
        root = tree.root
        files = len(tree.files)
    expected = add_samples(root)
    files_all, bytes_all = tree_size(root)
    print(f"tree {root}: {files_all:,} files, {bytes_all / 1e6:,.1f} MB (generated {files:,} + samples)")
    runs = args.runs
    print("warm-up (unmeasured): yara CLI and one scan of ours")
    timed(cli_cmd(root))
    timed(ours_cmd(root, work / "warm" / "cache.db", args.threads))

    # interleaved (CLI, first scan, re-scan) rounds, so that load drifting on a shared host hits all three
    cli_runs, first_runs, re_runs = [], [], []
    for i in range(runs):
        cli_runs.append(timed(cli_cmd(root)))
        cache = work / f"first{i}" / "cache.db"
        first_runs.append(timed(ours_cmd(root, cache, args.threads)))
        re_runs.append(timed(ours_cmd(root, cache, args.threads)))
    cli_wall, cli_out, cli_cpu = summarize("yara -r -N -w -p 2", cli_runs)
    first_wall, first_out, first_cpu = summarize(f"hostward first scan ({args.threads} workers)", first_runs)
    re_wall, re_out, re_cpu = summarize("hostward re-scan (results cache)", re_runs)
    first = json.loads(first_out)
    again = json.loads(re_out)
    mb = bytes_all / 1e6
    print()
    print(
        f"  yara CLI        {mb / cli_wall:8.1f} MB/s  {files_all / cli_wall:9,.0f} files/s  "
        f"cpu {cli_cpu:.2f} s"
    )
    print(
        f"  hostward first  {mb / first_wall:8.1f} MB/s  {files_all / first_wall:9,.0f} files/s  "
        f"cpu {first_cpu:.2f} s"
        f"  (scanned {first['stats']['scanned']:,}, in-process {first['stats']['seconds']:.3f} s)"
    )
    print(
        f"  hostward rescan {mb / re_wall:8.1f} MB/s  {files_all / re_wall:9,.0f} files/s  cpu {re_cpu:.2f} s"
        f"  (cache hits {again['stats']['cache_hits']:,}, scanned {again['stats']['scanned']}, "
        f"in-process {again['stats']['seconds']:.3f} s)"
    )
    ratio_first = cli_wall / first_wall
    ratio_re = cli_wall / re_wall
    hits_cli = cli_hits(cli_out)
    hits_ours = set(first["hits"])
    same = hits_cli == hits_ours == set(again["hits"])
    print(
        f"  matching files: CLI {len(hits_cli)}, ours {len(hits_ours)}, rescan {len(again['hits'])}; "
        f"identical: {same}; all samples found: {expected <= hits_ours}"
    )
    if not same:
        print(
            f"  only CLI: {sorted(hits_cli - hits_ours)[:5]}  only ours: {sorted(hits_ours - hits_cli)[:5]}"
        )
    print(f"  first scan / CLI throughput = {ratio_first:.2f}x (target >= {TARGET_FIRST}x)")
    print(f"  CLI time / re-scan time     = {ratio_re:.1f}x (target >= {TARGET_RESCAN}x)")
    # On a shared host the load drifts between runs; the rounds ran CLI, first scan and re-scan back to
    # back, so per-round ratios and CPU-time ratios are less sensitive to it than ratios of medians.
    paired_first = statistics.median(c[0] / f[0] for c, f in zip(cli_runs, first_runs, strict=True))
    paired_re = statistics.median(c[0] / r[0] for c, r in zip(cli_runs, re_runs, strict=True))
    print(
        "  per round (CLI / first / re-scan, s): "
        + "; ".join(
            f"{c[0]:.2f} / {f[0]:.2f} / {r[0]:.3f}"
            for c, f, r in zip(cli_runs, first_runs, re_runs, strict=True)
        )
    )
    print(f"  median of per-round ratios: first scan {paired_first:.2f}x, re-scan {paired_re:.1f}x")
    print(
        f"  CPU seconds, CLI / ours (whole processes): first scan {cli_cpu / first_cpu:.2f}x, "
        f"re-scan {cli_cpu / re_cpu:.1f}x"
    )

    # throttled: one worker at a CPU share, over a tenth of the tree (so it stays short)
    sub = sorted(p for p in root.iterdir() if p.is_dir())[: max(1, len(list(root.iterdir())) // 10)]
    part = work / "throttle-part"
    part.mkdir()
    for p in sub:
        (part / p.name).symlink_to(p)
    budget = 20.0
    t_wall, t_cpu, t_rss, t_bytes = 0.0, 0.0, 0, 0
    for p in sub:
        wall, out, cpu, rss = timed(ours_cmd(p, work / "thr" / "cache.db", 1, args.throttle_share))
        t_wall += wall
        t_cpu += cpu
        t_rss = max(t_rss, rss)
        t_bytes += json.loads(out)["stats"]["bytes_scanned"]
    cpu_pct = 100.0 * t_cpu / t_wall if t_wall else 0.0
    print(
        f"  throttled (1 worker, cpu share {args.throttle_share}): {t_bytes / 1e6 / t_wall:.1f} MB/s, "
        f"CPU {cpu_pct:.1f}% of one core (budget {budget:.0f}%), peak RSS {t_rss / 1024:.0f} MB (cap 150)"
    )
    ok = ratio_first >= TARGET_FIRST and ratio_re >= TARGET_RESCAN and same and expected <= hits_ours
    summary = (
        f"yara_cli_mbps={mb / cli_wall:.1f} first_mbps={mb / first_wall:.1f} first_ratio={ratio_first:.2f} "
        f"rescan_s={re_wall:.3f} rescan_ratio={ratio_re:.1f} paired_first={paired_first:.2f} "
        f"paired_rescan={paired_re:.1f} throttled_cpu={cpu_pct:.1f}% "
        f"same_hits={same}"
    )
    return ok, summary


SPAWNER = r"""
import os, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
interval = 1.0 / rate
spawned = 0
t0 = time.monotonic()
end = t0 + seconds
nxt = t0
while True:
    now = time.monotonic()
    if now >= end:
        break
    if now < nxt:
        time.sleep(min(nxt - now, 0.001))
        continue
    os.posix_spawn("/bin/true", ["true"], {})
    spawned += 1
    nxt += interval
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
print(spawned, time.monotonic() - t0, flush=True)
"""


SPAWNER_C = r"""
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
extern char **environ;
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
int main(int argc, char **argv) {
    double rate = atof(argv[1]), seconds = atof(argv[2]), interval = 1.0 / rate;
    char *child[] = {"true", NULL};
    char go[8];
    printf("ready\n"); fflush(stdout);
    if (!fgets(go, sizeof go, stdin)) return 1;
    double t0 = now(), next = t0, end = t0 + seconds;
    long spawned = 0;
    for (;;) {
        double t = now();
        if (t >= end) break;
        if (t < next) { struct timespec d = {0, (long)((next - t) * 1e9)}; nanosleep(&d, NULL); continue; }
        pid_t pid;
        if (posix_spawn(&pid, "/bin/true", NULL, NULL, child, environ) == 0) spawned++;
        next += interval;
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
    }
    while (waitpid(-1, NULL, 0) > 0) {}
    printf("%ld %f\n", spawned, now() - t0); fflush(stdout);
    return 0;
}
"""


def spawner_cmd(work: Path, rate: float, seconds: float) -> list[str]:
    """A C spawner when a compiler is there (a Python loop cannot fork+exec 2,000/s on a busy host)."""
    exe = work / "spawner"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc and not exe.exists():
        (work / "spawner.c").write_text(SPAWNER_C)
        subprocess.run([cc, "-O2", "-o", str(exe), str(work / "spawner.c")], check=False, capture_output=True)
    if exe.exists():
        return [str(exe), str(rate), str(seconds)]
    return [sys.executable, "-c", SPAWNER, str(rate), str(seconds)]


def proc_part(args: argparse.Namespace, work: Path) -> tuple[bool, str]:
    from hostward.agent.collectors.proccn import EV_EXEC, EV_FORK, ProcessCollector
    from hostward.agent.detectors import DetectorSet, Observation
    from hostward.agent.detectors.highrisk import HighRiskCommandDetector
    from hostward.agent.detectors.privesc import PrivilegeEscalationDetector
    from hostward.agent.detectors.revshell import ReverseShellDetector

    if os.geteuid() != 0:
        print("process events: skipped (the proc connector needs root)")
        return True, "proc=skipped"
    detectors = DetectorSet(
        [
            ReverseShellDetector(standalone=True),
            HighRiskCommandDetector(standalone=True),
            PrivilegeEscalationDetector(standalone=True),
        ]
    )
    lock = threading.Lock()
    alarms = [0]

    def emit(obs: Observation) -> None:
        with lock:
            alarms[0] += len(detectors.feed(obs, datetime.now(UTC)))

    # several spawners share the rate: one Python process alone cannot fork+exec 2,000/s on a busy host
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
    children: set[int] = set()
    execs_seen = [0]
    spawner_pids = {sp.pid for sp in spawners}

    def tap(ev: object) -> None:
        what, tgid = ev[0], ev[2]  # type: ignore[index]
        if what == EV_FORK and ev[4] in spawner_pids:  # type: ignore[index]
            children.add(tgid)
        elif what == EV_EXEC and tgid in children:
            execs_seen[0] += 1

    collector = ProcessCollector(emit, mode="connector", snapshot=False)
    collector.add_tap(tap)
    collector.start()
    collector.ready.wait(10)
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
        sp.wait(60)
        spawned += int(line[0])
        took = max(took, float(line[1]))
    deadline = time.monotonic() + 10
    while execs_seen[0] < spawned and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    wall = time.perf_counter() - t0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    collector.stop()
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    st = collector.stats
    lost = spawned - execs_seen[0]
    print(
        f"  spawned {spawned:,} /bin/true in {took:.2f} s = {spawned / took:,.0f} execs/s "
        f"(target rate {args.exec_rate:,.0f}/s, {args.spawners} spawner processes)"
    )
    print(f"  exec events of those children received: {execs_seen[0]:,}; lost {lost}")
    print(f"  collector: {st.as_dict()}")
    print(
        f"  collector process CPU {100 * cpu / wall:.1f}% of one core over {wall:.1f} s; alarms {alarms[0]}"
    )
    ok = lost == 0 and st.lost_overruns == 0 and st.dropped == 0
    return ok, (
        f"execs_per_s={spawned / took:.0f} exec_events={execs_seen[0]} spawned={spawned} lost={lost} "
        f"overruns={st.lost_overruns}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=DEFAULT_BASE)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--throttle-share", type=float, default=0.15, help="CPU share of the throttled scan")
    ap.add_argument("--cpu-share", type=float, default=None, help=argparse.SUPPRESS)  # worker only
    ap.add_argument("--exec-rate", type=float, default=2000.0)
    ap.add_argument("--exec-seconds", type=float, default=5.0)
    ap.add_argument("--spawners", type=int, default=8, help="processes sharing the exec rate")
    ap.add_argument("--small", action="store_true", help="a ~20 MB tree and a short exec burst (smoke test)")
    ap.add_argument("--skip-scan", action="store_true")
    ap.add_argument("--skip-proc", action="store_true")
    ap.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--rules-cache", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.small:
        args.runs = min(args.runs, 1)
        args.exec_rate = min(args.exec_rate, 500.0)
        args.exec_seconds = min(args.exec_seconds, 1.0)
    if shutil.which("yara") is None and not args.skip_scan:
        print("the yara command line tool is not installed (apt-get install yara)")
        return 2
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    ok = True
    parts = []
    with tempfile.TemporaryDirectory(prefix="hw-yara-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_scan:
            print("== YARA: hostward scanner vs yara CLI")
            scan_ok, summary = scan_part(args, work)
            ok &= scan_ok
            parts.append(summary)
        if not args.skip_proc:
            print("== process events")
            proc_ok, summary = proc_part(args, work)
            ok &= proc_ok
            parts.append(summary)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"SUMMARY yara_vs_cli {' '.join(parts)} result={'PASS' if ok else 'FAIL'}")
    return 3 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
