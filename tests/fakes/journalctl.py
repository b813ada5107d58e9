"""A stand-in for ``journalctl -o json -f`` reading entries from a JSON-lines file.

Environment: FAKE_JOURNAL (the entries file, one JSON object per line, each with ``__CURSOR``),
FAKE_JOURNAL_ARGV (a file each invocation appends its argv to, as JSON). Honours ``--after-cursor=C``
(entries after C) and ``-n 0`` (only entries appended after start); follows the file like ``-f``.
Exits after FAKE_JOURNAL_EXIT_AFTER entries when set (a crashing journalctl), or after 60 s.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    argv = sys.argv[1:]
    with open(os.environ["FAKE_JOURNAL_ARGV"], "a", encoding="utf-8") as log:
        log.write(json.dumps(argv) + "\n")
    path = os.environ["FAKE_JOURNAL"]
    after = next((a.split("=", 1)[1] for a in argv if a.startswith("--after-cursor=")), None)
    exit_after = int(os.environ.get("FAKE_JOURNAL_EXIT_AFTER", "0"))
    with open(path, encoding="utf-8") as f:
        existing = f.readlines()
    position = 0
    if after is not None:
        cursors = [json.loads(line)["__CURSOR"] for line in existing if line.strip()]
        position = cursors.index(after) + 1 if after in cursors else 0
    elif "-n" in argv:
        position = len(existing)
    printed = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
        for line in lines[position:]:
            if not line.endswith("\n"):
                break
            sys.stdout.write(line)
            sys.stdout.flush()
            position += 1
            printed += 1
            if exit_after and printed >= exit_after:
                return 1
        time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main())
