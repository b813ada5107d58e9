"""``python -m hostward.cli`` (used by ``hostward up`` to start its child processes)."""

from hostward.cli.main import main

main()
