"""Developer helper: regenerate the initial migration from the ORM models (before the first release)."""

from __future__ import annotations

import subprocess
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
    generated = sorted(versions.glob("*.py"))
    # Alembic's template leaves trailing spaces and unsorted imports: make the file lint-clean.
    ruff = Path(sys.executable).with_name("ruff")
    names = [str(p) for p in generated]
    subprocess.run([str(ruff), "check", "--fix", "--unsafe-fixes", "-q", *names], check=False)
    subprocess.run([str(ruff), "format", "-q", *names], check=True)
    print("regenerated", *(p.name for p in generated))
    return 0


if __name__ == "__main__":
    sys.exit(main())
