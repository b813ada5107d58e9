"""Forked FIM scans (the CLI's): part files merged into a new baseline, quick checks whose children read
their own keys; both must record and report exactly what the threaded scanner does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostward.agent.fim.config import RootSet, WatchRoot
from hostward.agent.fim.engine import FimEngine
from hostward.agent.fim.forked import disjoint
from hostward.agent.fim.scan import Scanner, stat_key
from hostward.agent.fim.store import BaselineStore, BaselineWriter, write_part


def _b(p: Path | str) -> bytes:
    return os.fsencode(str(p))


def _tree(base: Path) -> Path:
    """40 subtrees (enough units for two workers), files at the top, a symlink, an unreadable file,
    a FIFO, an xattr where the file system has them, a name that is not UTF-8."""
    root = base / "root"
    for d in range(40):
        sub = root / f"d{d:02d}" / "s"
        sub.mkdir(parents=True)
        for i in range(6):
            (sub / f"f{i}").write_bytes(os.urandom(50 + 97 * i))
    (root / "top.txt").write_text("top")
    (root / "d00" / "link").symlink_to("s/f1")
    (root / "d01" / "loop").symlink_to(".")
    secret = root / "d02" / "secret"
    secret.write_bytes(b"x")
    secret.chmod(0)
    os.mkfifo(root / "d03" / "fifo")
    (root / "d04" / "s" / b"caf\xe9".decode(errors="surrogateescape")).write_bytes(b"latin-1 name")
    try:
        os.setxattr(root / "d05" / "s" / "f0", "user.tag", b"v1")
    except OSError:
        pass
    (root / "d05-x").mkdir()  # sorts between "d05" and "d05/": must not fall into the d05 unit
    (root / "d05-x" / "f").write_text("sibling")
    return root


def _roots(base: Path, root: Path) -> list[WatchRoot]:
    lone = base / "lone.conf"
    lone.write_text("a file root")
    return [WatchRoot(_b(root)), WatchRoot(_b(lone))]


def test_disjoint_roots() -> None:
    assert disjoint([WatchRoot(b"/srv/a"), WatchRoot(b"/srv/a-b"), WatchRoot(b"/srv/ab/c")])
    assert not disjoint([WatchRoot(b"/srv/a"), WatchRoot(b"/srv/a-b"), WatchRoot(b"/srv/a/x")])
    assert not disjoint([WatchRoot(b"/"), WatchRoot(b"/etc")])
    assert disjoint([WatchRoot(b"/etc")])


def test_paths_outside_subtrees(tmp_path: Path) -> None:
    rows = [
        (p, 0o100644, 0, 0, 1, i, 0, 0, None, None, None, None, None)
        for i, p in enumerate(
            [b"/r", b"/r/a", b"/r/a/x", b"/r/a-b", b"/r/a.c", b"/r/a/y/z", b"/r/b", b"/r/b/q", b"/r/c", b"/s"]
        )
    ]
    store = BaselineStore.write_new(tmp_path / "b.db", [], rows, [])
    assert store.paths_outside([b"/r/a", b"/r/b"]) == {b"/r", b"/r/a-b", b"/r/a.c", b"/r/c", b"/s"}
    assert store.paths_outside([]) == {r[0] for r in rows}
    assert store.key(b"/r/a/x") == stat_key(rows[2]) and store.key(b"/nope") is None
    keys_under = store.reader()
    assert set(keys_under(b"/r/a")) == {b"/r/a", b"/r/a/x", b"/r/a/y/z"}
    store.close()


@pytest.mark.parametrize("racy_ns", [0, 2_000_000_000])
def test_forked_baseline_equals_threaded(tmp_path: Path, racy_ns: int) -> None:
    root = _tree(tmp_path)
    roots = _roots(tmp_path, root)
    threaded, t_stats = FimEngine.init(
        tmp_path / "t.db", roots, scanner=Scanner(workers=2, racy_ns=racy_ns), packages=None
    )
    forked, f_stats = FimEngine.init(
        tmp_path / "f.db", roots, scanner=Scanner(workers=2, racy_ns=racy_ns, processes=True), packages=None
    )
    assert forked.store.load() == threaded.store.load()
    assert forked.store.racy() == threaded.store.racy()
    if racy_ns:
        assert len(forked.store.racy()) > 200  # everything was just written
    assert (f_stats.entries, f_stats.files_hashed, f_stats.bytes_hashed, f_stats.errors) == (
        t_stats.entries,
        t_stats.files_hashed,
        t_stats.bytes_hashed,
        t_stats.errors,
    )
    assert f_stats.files_hashed == 40 * 6 + 5 and f_stats.errors == (0 if os.geteuid() == 0 else 1)
    assert forked.health().counters["entries"] == forked.store.count() == f_stats.entries
    assert not [p for p in os.listdir(tmp_path) if ".fim-part." in p]  # part files merged and removed
    forked.close()
    threaded.close()


def test_forked_quick_check_equals_threaded(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    roots = _roots(tmp_path, root)
    FimEngine.init(tmp_path / "b.db", roots, scanner=Scanner(workers=2, racy_ns=0), packages=None)[0].close()
    # Changes in units, in the top the parent lists, a unit directory removed, one replaced by a file.
    (root / "d07" / "s" / "f2").write_bytes(b"changed")
    (root / "d09" / "s" / "f3").unlink()
    (root / "top.txt").write_text("top, changed")
    (root / "new-top").write_text("added at the top")
    (root / "d11" / "s" / "new").write_text("added in a unit")
    for f in (root / "d12" / "s").iterdir():
        f.unlink()
    (root / "d12" / "s").rmdir()
    (root / "d12").rmdir()
    for f in (root / "d13" / "s").iterdir():
        f.unlink()
    (root / "d13" / "s").rmdir()
    (root / "d13").rmdir()
    (root / "d13").write_text("a file where a directory was")
    (root / "d05-x" / "f").write_text("sibling, changed")
    (tmp_path / "lone.conf").unlink()

    store = BaselineStore.open(tmp_path / "b.db", create=False)
    rootset = RootSet(store.roots())
    keys = store.load_keys()
    threaded = Scanner(workers=2, racy_ns=0).scan(rootset.roots, all_roots=rootset, keys=keys)
    forked = Scanner(workers=2, racy_ns=0, processes=True).check_against(
        rootset.roots, store, all_roots=rootset
    )
    assert forked.rows == threaded.rows
    assert forked.missing == threaded.missing
    assert _b(root / "d12" / "s" / "f0") in forked.missing and _b(tmp_path / "lone.conf") in forked.missing
    assert forked.stats.reused == threaded.stats.reused and forked.stats.entries == threaded.stats.entries

    # The same through the engine: the forked check reports exactly the threaded one's changes.
    by_threads = FimEngine(store, scanner=Scanner(workers=2, racy_ns=0), packages=None).check(update=False)
    by_forks = FimEngine(store, scanner=Scanner(workers=2, racy_ns=0, processes=True), packages=None).check(
        update=False
    )
    assert by_forks.changes == by_threads.changes and by_forks.changes
    store.close()


def test_nested_roots_fall_back_to_the_bitmap_walk(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    roots = [WatchRoot(_b(root)), WatchRoot(_b(root / "d03"), recursive=False)]
    scanner = Scanner(workers=2, racy_ns=0, processes=True)
    assert not scanner.forks_for(roots)
    engine, _ = FimEngine.init(tmp_path / "b.db", roots, scanner=scanner, packages=None)
    (root / "d03" / "new").write_text("x")
    (root / "d08" / "s" / "f1").unlink()
    changes = engine.check(update=False).changes
    assert {(c.action, c.path) for c in changes if c.significant()} == {
        ("added", _b(root / "d03" / "new")),
        ("removed", _b(root / "d08" / "s" / "f1")),
    }
    engine.close()


class _FailingSink:
    """A ``PartSink`` whose second merge fails, as a full disk would."""

    def __init__(self, part_dir: Path) -> None:
        self.part_dir = str(part_dir)
        self.merged = 0

    def add(self, rows: list[tuple[object, ...]]) -> None:
        pass

    def merge_part(self, part: str) -> None:
        self.merged += 1
        if self.merged == 2:
            raise OSError(28, "No space left on device")


def test_a_failed_merge_leaves_no_part_files(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    parts = tmp_path / "parts"
    parts.mkdir()
    scanner = Scanner(workers=2, racy_ns=0, processes=True)
    with pytest.raises(OSError, match="No space"):
        scanner.record_into([WatchRoot(_b(root))], _FailingSink(parts))
    assert os.listdir(parts) == []


def test_a_part_of_many_rows_merges_back_to_the_same_rows(tmp_path: Path) -> None:
    # 600 plain rows: two full multi-row statements and a remainder; every 7th row needs the "rest" table.
    rows = []
    for i in range(600):
        sha = os.urandom(32) if i % 3 else None
        xattrs = b"\x00\x08user.tag\x00\x00\x00\x01v" if i % 7 == 0 else None
        error = "EACCES" if i % 11 == 0 else None
        flags = None if i % 5 == 0 else i % 64
        rows.append(
            (b"/r/f%04d" % i, 0o100644, i, i + 1, i * 10, 1000 + i, i, i + 2, sha, flags, xattrs, None, error)
        )
    rows.append((b"/r/link", 0o120777, 0, 0, 6, 7, 8, 9, None, None, None, b"target", None))
    with BaselineWriter(tmp_path / "b.db", []) as writer:
        part = write_part(str(tmp_path), rows, os.getpid())
        writer.merge_part(part)
        os.unlink(part)
        store = writer.finish([])
    assert store.load() == {r[0]: r for r in rows}
    store.close()
