"""Harness for the two-process test: one manager replica running the real scheduler on a shared DB.

Run as ``python -m tests.integration.scheduler_worker URL INSTANCE OUT_FILE RUN_DIR EXPECTED``. It writes
``RUN_DIR/INSTANCE.ready``, waits for ``RUN_DIR/go``, then runs the scheduler until the ``test.record``
jobs are all finished. Every execution of a job is appended to OUT_FILE *outside* the job's
transaction, so a second execution would show even if its database work were rolled back.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select, text

from hostward.manager.context import ManagerContext
from hostward.manager.scheduler.models import Job
from hostward.manager.scheduler.registry import JobRun, Registry
from hostward.manager.scheduler.runner import Scheduler
from hostward.manager.settings import ManagerSettings

JOB_SECONDS = 0.01
TIMEOUT_S = 60.0


def main(url: str, instance: str, out_file: str, run_dir: str, expected: int) -> int:
    # Line-buffered: every execution reaches the file at once.
    with open(out_file, "a", buffering=1) as out:
        return _run(url, instance, out, Path(run_dir), expected)


def _run(url: str, instance: str, out: TextIO, run_dir: Path, expected: int) -> int:
    def record(session: Any, run: JobRun) -> None:
        out.write(f"job {run.id} {run.instance}\n")
        session.execute(
            text("INSERT INTO job_runs (job_id, instance) VALUES (:j, :i)"), {"j": run.id, "i": run.instance}
        )
        time.sleep(JOB_SECONDS)

    def tick(session: Any, at: datetime, settings: ManagerSettings) -> None:
        out.write(f"tick {at.timestamp()!r} {settings.instance_name}\n")

    registry = Registry()
    registry.add_job("test.record", record)
    registry.add_periodic("test.tick", 1, tick)
    with tempfile.TemporaryDirectory() as data_dir:
        settings = ManagerSettings(
            data_dir=Path(data_dir), database_url=url, instance_name=instance, scheduler_poll_s=0.02
        )
        ctx = ManagerContext.from_settings(settings)
        sched = Scheduler(ctx, registry)
        (run_dir / f"{instance}.ready").touch()
        deadline = time.monotonic() + TIMEOUT_S
        while not (run_dir / "go").exists():
            if time.monotonic() > deadline:
                return 3
            time.sleep(0.005)
        sched.start()
        try:
            while time.monotonic() < deadline:
                with ctx.uow() as s:
                    finished = s.scalar(
                        select(func.count()).where(
                            Job.kind == "test.record", Job.status.in_(("done", "failed"))
                        )
                    )
                if finished == expected:
                    return 0
                time.sleep(0.05)
            return 2
        finally:
            sched.stop()
            ctx.close()


if __name__ == "__main__":
    url, instance, out_file, run_dir, expected = sys.argv[1:6]
    sys.exit(main(url, instance, out_file, run_dir, int(expected)))
