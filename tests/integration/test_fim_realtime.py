"""Realtime FIM with real inotify/fanotify: events within a bounded wait, process attribution, overflow."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hostward.agent.fim import inotify as ino
from hostward.agent.fim.config import WatchRoot
from hostward.agent.fim.diff import Change
from hostward.agent.fim.engine import FimEngine
from hostward.agent.fim.scan import Scanner
from hostward.agent.fim.watch import FimWatcher
from tests.conftest import need

WAIT_S = 5.0


def _b(p: Path | str) -> bytes:
    return os.fsencode(str(p))


class Collector:
    """Receives changes on the watcher thread; tests wait for a predicate with a deadline."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.cond = threading.Condition()
        self.gate: threading.Event | None = None

    def __call__(self, changes: list[Change]) -> None:
        if self.gate is not None:
            self.gate.wait(30)
        with self.cond:
            self.changes.extend(changes)
            self.cond.notify_all()

    def wait_for(
        self, pred: Callable[[dict[bytes, Change]], bool], timeout: float = WAIT_S
    ) -> dict[bytes, Change]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                seen = {c.path: c for c in self.changes if c.significant()}
                if pred(seen):
                    return seen
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; saw {sorted(seen)}")
                self.cond.wait(left)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "www"
    (t / "static").mkdir(parents=True)
    (t / "index.html").write_text("<h1>hi</h1>\n")
    (t / "static" / "app.js").write_text("console.log(1)\n")
    return t


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[Callable[..., tuple[FimEngine, FimWatcher, Collector]]]:
    started: list[tuple[FimEngine, FimWatcher]] = []

    def start(roots: list[WatchRoot], **kw: object) -> tuple[FimEngine, FimWatcher, Collector]:
        engine, _ = FimEngine.init(tmp_path / "fim.db", roots, scanner=Scanner(racy_ns=0), packages=None)
        sink = Collector()
        watcher = FimWatcher(engine, sink, settle_s=0.1, **kw)  # type: ignore[arg-type]
        watcher.start()
        started.append((engine, watcher))
        return engine, watcher, sink

    yield start
    for engine, watcher in started:
        watcher.stop()
        engine.close()


def test_modify_create_delete_move_are_reported(tree: Path, watch) -> None:  # type: ignore[no-untyped-def]
    _, watcher, sink = watch([WatchRoot(_b(tree))])
    (tree / "index.html").write_text("<h1>defaced</h1>\n")
    seen = sink.wait_for(lambda s: _b(tree / "index.html") in s)
    change = seen[_b(tree / "index.html")]
    assert change.action == "changed" and "sha256" in change.attrs
    (tree / "new" / "deep").mkdir(parents=True)
    (tree / "new" / "deep" / "shell.php").write_text("<?php system($_GET['c']); ?>\n")
    sink.wait_for(lambda s: _b(tree / "new" / "deep" / "shell.php") in s)
    os.rename(tree / "static" / "app.js", tree / "static" / "app.old.js")
    seen = sink.wait_for(lambda s: _b(tree / "static" / "app.old.js") in s)
    moved = seen[_b(tree / "static" / "app.old.js")]
    assert moved.action == "moved" and moved.moved_from == _b(tree / "static" / "app.js")
    (tree / "index.html").unlink()
    sink.wait_for(
        lambda s: (
            s.get(_b(tree / "index.html")) is not None and s[_b(tree / "index.html")].action == "removed"
        )
    )
    # Watches follow new directories: a file written later inside one is seen too.
    (tree / "new" / "deep" / "later.txt").write_text("x")
    sink.wait_for(lambda s: _b(tree / "new" / "deep" / "later.txt") in s)
    health = watcher.health()
    assert health.status == "running" and health.counters["watches"] >= 4


def test_missing_root_is_noticed_when_it_appears(tmp_path: Path, watch) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "root"
    home.mkdir()
    keys = home / ".ssh" / "authorized_keys"
    _, _, sink = watch([WatchRoot(_b(keys), important=True)])
    # No pause between the two: whether the watcher has re-planned onto .ssh yet or not, the new
    # directory's event re-checks the roots below it.
    (home / ".ssh").mkdir()
    keys.write_text("ssh-ed25519 AAAA attacker@evil\n")
    seen = sink.wait_for(lambda s: _b(keys) in s)
    assert seen[_b(keys)].important and seen[_b(keys)].action == "added"


def test_ignore_globs_and_non_recursive_roots(tmp_path: Path, tree: Path, watch) -> None:  # type: ignore[no-untyped-def]
    flat = tmp_path / "flat"
    (flat / "sub").mkdir(parents=True)
    _, _, sink = watch([WatchRoot(_b(tree), ignore=("*.tmp", "cache")), WatchRoot(_b(flat), recursive=False)])
    (tree / "x.tmp").write_text("ignored")
    (tree / "cache").mkdir()
    (tree / "cache" / "c").write_text("ignored")
    (flat / "sub" / "deep").write_text("below a non-recursive root")
    (flat / "top").write_text("seen")
    (tree / "marker").write_text("seen")
    seen = sink.wait_for(lambda s: _b(flat / "top") in s and _b(tree / "marker") in s)
    assert not any(p.endswith((b".tmp", b"/cache", b"/c", b"/deep")) for p in seen)


def test_fanotify_names_the_writing_process(tree: Path, watch) -> None:  # type: ignore[no-untyped-def]
    need("root", "fanotify needs CAP_SYS_ADMIN")
    _, watcher, sink = watch([WatchRoot(_b(tree))])
    if not watcher.health().counters["fanotify"]:
        pytest.fail(f"fanotify unavailable as root: {watcher.health().reasons}")
    target = tree / "index.html"
    proc = subprocess.Popen(["/bin/sh", "-c", f"echo pwned >> '{target}'; sleep 2"])
    try:
        seen = sink.wait_for(lambda s: _b(target) in s)
    finally:
        proc.kill()
        proc.wait()
    process = seen[_b(target)].process
    assert process is not None and process.pid == proc.pid
    assert os.path.basename(process.exe) in ("dash", "bash", "sh") and process.user == "root"
    assert "echo pwned" in process.cmdline


def test_without_fanotify_the_watcher_says_so(tree: Path, watch) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() == 0:
        # As root fanotify works; turning it off must still be reported cleanly.
        _, watcher, sink = watch([WatchRoot(_b(tree))], use_fanotify=False)
        assert watcher.health().counters["fanotify"] == 0
    else:
        _, watcher, sink = watch([WatchRoot(_b(tree))])
        assert any("fanotify unavailable" in r for r in watcher.health().reasons)
    (tree / "index.html").write_text("changed")
    seen = sink.wait_for(lambda s: _b(tree / "index.html") in s)
    assert seen[_b(tree / "index.html")].process is None


def test_queue_overflow_triggers_a_rescan(tree: Path, watch) -> None:  # type: ignore[no-untyped-def]
    need("root", "max_queued_events is a system setting")
    old = ino.read_limit(ino.MAX_QUEUED_EVENTS)
    assert old is not None
    assert ino.write_limit(ino.MAX_QUEUED_EVENTS, 16)
    try:
        _, watcher, sink = watch([WatchRoot(_b(tree))])  # the instance keeps the tiny queue
    finally:
        assert ino.write_limit(ino.MAX_QUEUED_EVENTS, old)
    sink.gate = threading.Event()  # hold the watcher thread inside the callback
    (tree / "first").write_text("1")
    time.sleep(0.5)
    for i in range(200):
        (tree / f"burst-{i}").write_text(str(i))
    sink.gate.set()
    seen = sink.wait_for(lambda s: all(_b(tree / f"burst-{i}") in s for i in range(200)), timeout=15)
    assert seen[_b(tree / "burst-199")].action == "added"
    assert watcher.health().counters["overflows"] >= 1


def test_watch_plan_covers_symlinked_parents_once(tmp_path: Path, watch) -> None:  # type: ignore[no-untyped-def]
    real = tmp_path / "usr" / "bin"
    real.mkdir(parents=True)
    os.symlink("usr/bin", tmp_path / "bin")
    (real / "ls").write_text("ls v1")
    roots = [
        WatchRoot(_b(tmp_path / "bin" / "ls"), important=True),
        WatchRoot(_b(real / "ls"), important=True),
    ]
    _, watcher, sink = watch(roots)
    (real / "ls").write_text("ls trojan")
    seen = sink.wait_for(lambda s: _b(tmp_path / "bin" / "ls") in s and _b(real / "ls") in s)
    assert all(c.important for c in seen.values())
    assert watcher.health().counters["watches"] >= 1
