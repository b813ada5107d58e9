"""Developer helper: regenerate the initial migration from the ORM models (before the first release)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from hostward.manager.db.migrate import MIGRATIONS_DIR, alembic_config


def main() -> int:
    versions = MIGRATIONS_DIR / "versions"
    for old in versions.glob("*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = alembic_config(f"sqlite:///{Path(tmp) / 'gen.db'}")
        command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
    print("regenerated", *sorted(p.name for p in versions.glob("*.py")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
