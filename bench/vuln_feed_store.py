"""Manager feed store at the scale of the public feeds: import 50,000 OSV advisories (one zip, as the OSV
dumps ship), then answer one agent's advisory request for 3,000 packages (lookup + the NDJSON stream),
on SQLite (default) or PostgreSQL (``--database-url``). Prints the times and the bytes streamed.

    .venv/bin/python bench/vuln_feed_store.py [--advisories 50000] [--packages 3000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostward.agent.vulns.feeds import normalize_name
from hostward.manager.context import ManagerContext
from hostward.manager.db import migrate
from hostward.manager.settings import ManagerSettings
from hostward.manager.vulns import feeds
from vulns_match import generate


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--advisories", type=int, default=50_000)
    parser.add_argument("--packages", type=int, default=3_000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    advisories, packages = generate(args.advisories, args.packages)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "osv.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for adv in advisories:
                zf.writestr(f"{adv['id']}.json", json.dumps(adv))
        settings = ManagerSettings(data_dir=Path(tmp), database_url=args.database_url)  # type: ignore[call-arg]
        migrate.upgrade(settings.effective_database_url)
        ctx = ManagerContext.from_settings(settings)
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        with ctx.uow() as s:
            feed = feeds.import_path(s, archive, name="osv.zip", source="path", actor="bench", now=now)
            stored = feed.advisories
        t1 = time.perf_counter()
        wanted = sorted({(p.family, normalize_name(p.family, p.name)) for p in packages})
        with ctx.uow() as s:
            ids = feeds.advisory_ids_for(s, wanted)
        t2 = time.perf_counter()
        streamed = 0
        with ctx.sessions() as s:
            for line in feeds.advisory_lines(s, ids):
                streamed += len(line)
        t3 = time.perf_counter()
        ctx.close()
    print(f"import: {stored} advisories in {t1 - t0:.2f} s ({stored / (t1 - t0):.0f}/s)")
    print(f"lookup: {len(ids)} advisories for {len(wanted)} packages in {t2 - t1:.3f} s")
    print(f"stream: {streamed / 1e6:.1f} MB in {t3 - t2:.2f} s")
    print(
        f"SUMMARY vuln_feed_store advisories={stored} import_s={t1 - t0:.2f} packages={len(wanted)} "
        f"matched={len(ids)} lookup_s={t2 - t1:.3f} stream_s={t3 - t2:.2f} stream_mb={streamed / 1e6:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
