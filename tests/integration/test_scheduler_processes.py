"""THE scale-out guarantee: two real manager processes on one PostgreSQL never run a job twice."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from hostward.manager.context import ManagerContext
from hostward.manager.scheduler import jobs
from hostward.manager.scheduler.models import PeriodicTask

REPO = Path(__file__).resolve().parents[2]
JOBS = 200


@pytest.mark.slow
@pytest.mark.postgres
def test_two_manager_processes_never_run_a_job_twice(pg_ctx: ManagerContext, tmp_path: Path) -> None:
    ctx = pg_ctx
    url = ctx.settings.database_url
    with ctx.engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE job_runs (job_id VARCHAR(36) NOT NULL, instance VARCHAR(64) NOT NULL)")
        )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    names = ("replica-1", "replica-2")
    outs = {name: tmp_path / f"{name}.log" for name in names}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.scheduler_worker",
                url,
                name,
                str(outs[name]),
                str(run_dir),
                str(JOBS),
            ],
            cwd=REPO,
        )
        for name in names
    ]
    try:
        deadline = time.monotonic() + 30
        while not all((run_dir / f"{n}.ready").exists() for n in names):
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), "a worker exited early"
            time.sleep(0.05)
        with ctx.uow() as s:
            ids = {jobs.enqueue(s, "test.record", {"i": i}).id for i in range(JOBS)}
        (run_dir / "go").touch()
        codes = [p.wait(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0, 0]

    executions: list[tuple[str, str]] = []
    ticks: list[tuple[float, str]] = []
    for name, path in outs.items():
        for line in path.read_text().splitlines():
            what, value, instance = line.split()
            assert instance == name
            if what == "job":
                executions.append((value, instance))
            else:
                ticks.append((float(value), instance))

    # Every job ran exactly once (counting executions whose DB work could have been rolled back) ...
    per_job = Counter(job_id for job_id, _ in executions)
    assert set(per_job) == ids
    assert max(per_job.values()) == 1, [j for j, n in per_job.items() if n > 1]
    # ... both replicas took part ...
    per_instance = Counter(instance for _, instance in executions)
    assert set(per_instance) == set(names), per_instance
    # ... and the committed records agree.
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT job_id, instance FROM job_runs")).all()
            statuses = dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
    finally:
        engine.dispose()
    assert sorted((r.job_id, r.instance) for r in rows) == sorted(executions)
    assert statuses == {"done": JOBS}

    # The periodic task ran once per advance, never twice within its interval.
    with ctx.uow() as s:
        tick_row = s.get(PeriodicTask, "test.tick")
        assert tick_row is not None
        assert tick_row.runs == len(ticks) >= 1
    times = sorted(t for t, _ in ticks)
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))
