"""FIM baseline store (real SQLite files) and the pure diff."""

from __future__ import annotations

import os
import sqlite3
import stat
import struct
from pathlib import Path

import pytest

from hostward.agent.fim.config import FimConfigError, RootSet, WatchRoot, default_roots, operator_roots
from hostward.agent.fim.diff import Change, change_dict, compare, diff
from hostward.agent.fim.scan import Entry
from hostward.agent.fim.store import BaselineError, BaselineStore

REG = stat.S_IFREG | 0o644
DIR = stat.S_IFDIR | 0o755


def row(
    path: bytes,
    *,
    mode: int = REG,
    size: int = 1,
    ino: int = 1,
    mtime: int = 10,
    ctime: int = 10,
    sha: bytes | None = b"\x01" * 32,
    uid: int = 0,
    xattrs: bytes | None = None,
    target: bytes | None = None,
) -> tuple:
    return (path, mode, uid, 0, size, ino, mtime, ctime, sha, 0, xattrs, target, None)


def test_store_round_trip_with_byte_paths(tmp_path: Path) -> None:
    db = tmp_path / "fim.db"
    rows = [row(b"/t"), row(b"/t/caf\xe9"), row(b"/t/a", sha=None, mode=DIR), row(b"/t/a/b")]
    roots = [WatchRoot(b"/t", ignore=("*.tmp",), operations=frozenset({"create", "delete"}))]
    store = BaselineStore.write_new(db, roots, rows, {b"/t/a/b"})
    assert store.load() == {r[0]: r for r in rows}
    assert store.racy() == {b"/t/a/b"}
    (got,) = store.roots()
    assert got == roots[0] and got.ignored(b"/t/x.tmp")
    assert store.baselined_roots() == {b"/t"}
    assert os.stat(db).st_mode & 0o777 == 0o600
    store.close()


def test_load_under_uses_exact_prefix_bounds(tmp_path: Path) -> None:
    paths = [b"/a/b", b"/a/b/c", b"/a/b/c/d", b"/a/b0", b"/a/bc", b"/a/b.txt", b"/a/a"]
    store = BaselineStore.write_new(tmp_path / "db", [], [row(p) for p in paths], set())
    assert set(store.load_under(b"/a/b")) == {b"/a/b", b"/a/b/c", b"/a/b/c/d"}
    store.apply([], delete_under=[b"/a/b"])
    assert set(store.load()) == {b"/a/b0", b"/a/bc", b"/a/b.txt", b"/a/a"}
    store.close()


def test_apply_upserts_deletes_and_racy_marks_in_one_transaction(tmp_path: Path) -> None:
    store = BaselineStore.write_new(tmp_path / "db", [], [row(b"/x"), row(b"/y")], {b"/x"})
    store.apply([row(b"/x", size=5), row(b"/z")], [b"/y"], racy_drop={b"/x"}, racy_add={b"/z"})
    assert store.load() == {b"/x": row(b"/x", size=5), b"/z": row(b"/z")}
    assert store.racy() == {b"/z"}
    with pytest.raises((sqlite3.IntegrityError, struct.error)):
        store.apply([row(b"/w"), (b"/bad", None, 0, 0, 0, 0, 0, 0, None, None, None, None, None)])
    assert b"/w" not in store.load()  # rolled back
    store.close()


def test_open_rejects_missing_foreign_and_future_files(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="no baseline"):
        BaselineStore.open(tmp_path / "none.db", create=False)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BaselineError, match="not a baseline"):
        BaselineStore.open(junk)
    future = tmp_path / "future.db"
    conn = sqlite3.connect(future)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(BaselineError, match="schema 99"):
        BaselineStore.open(future)


def test_compare_names_every_changed_attribute() -> None:
    old = row(b"/f")
    new = row(b"/f", size=2, ino=2, ctime=11, sha=b"\x02" * 32, uid=1000, xattrs=b"x")
    assert compare(old, new) == ("sha256", "size", "uid", "inode", "ctime", "xattrs")
    link = row(b"/f", mode=stat.S_IFLNK | 0o644, sha=None, target=b"/etc/shadow")
    assert compare(old, link)[:2] == ("type", "sha256")
    assert "mode" not in compare(old, link)


def test_diff_added_removed_changed_and_moved() -> None:
    prev = {
        p[0]: p for p in [row(b"/d/a", ino=1), row(b"/d/b", ino=2, sha=b"\x0b" * 32), row(b"/d/c", ino=3)]
    }
    cur = {
        b"/d/a": row(b"/d/a", ino=1, mtime=20, ctime=20, sha=b"\x09" * 32),
        b"/d/b2": row(b"/d/b2", ino=2, sha=b"\x0b" * 32, ctime=30),  # renamed
        b"/d/new": row(b"/d/new", ino=9),
    }
    changes = {c.path: c for c in diff(prev, cur)}
    assert changes[b"/d/a"].action == "changed" and changes[b"/d/a"].operation == "modify"
    assert changes[b"/d/b2"].action == "moved" and changes[b"/d/b2"].moved_from == b"/d/b"
    assert changes[b"/d/b2"].attrs == ()  # ctime bump of a rename is not news
    assert changes[b"/d/c"].action == "removed" and changes[b"/d/c"].operation == "delete"
    assert changes[b"/d/new"].action == "added" and changes[b"/d/new"].operation == "create"
    assert b"/d/b" not in changes
    assert diff(prev, dict(prev)) == []


def test_significance_filters_echo_changes() -> None:
    d_old, d_new = row(b"/d", mode=DIR, sha=None), row(b"/d", mode=DIR, sha=None, mtime=11, ctime=11, size=8)
    (dir_change,) = diff({b"/d": d_old}, {b"/d": d_new})
    assert not dir_change.significant()
    (ctime_only,) = diff({b"/f": row(b"/f")}, {b"/f": row(b"/f", ctime=99)})
    assert not ctime_only.significant()
    (chmod,) = diff({b"/f": row(b"/f")}, {b"/f": row(b"/f", mode=stat.S_IFREG | 0o4755, ctime=99)})
    assert chmod.significant() and chmod.operation == "attributes"


def test_change_dict_is_json_friendly_for_non_utf8_paths() -> None:
    (c,) = diff({}, {b"/t/\xff": row(b"/t/\xff")})
    data = change_dict(c)
    assert data["path"] == "/t/\\xff"
    assert data["new"]["sha256"] == "01" * 32 and data["new"]["mode"] == "0644"
    (m,) = diff({b"/f": row(b"/f")}, {b"/f": row(b"/f", uid=0, size=9)})
    assert change_dict(m)["old"] == {"size": 1} and change_dict(m)["new"] == {"size": 9}
    assert isinstance(Change(b"/x", "added", new=Entry._make(row(b"/x"))).label, str)


def test_root_validation_and_lookup() -> None:
    with pytest.raises(FimConfigError, match="not absolute"):
        WatchRoot(b"relative/path")
    with pytest.raises(FimConfigError, match="unknown operations"):
        WatchRoot(b"/x", operations=frozenset({"explode"}))
    with pytest.raises(FimConfigError, match="at most 50"):
        operator_roots([WatchRoot(f"/srv/{i}".encode()) for i in range(51)])
    assert WatchRoot(b"/a//b/../c/").path == b"/a/c"
    rs = RootSet(
        [
            WatchRoot(b"/srv", ignore=("cache", "*.tmp")),
            WatchRoot(b"/srv/flat", recursive=False),
            WatchRoot(b"/etc/passwd"),
        ]
    )
    assert rs.owner(b"/srv/a/b").path == b"/srv"  # type: ignore[union-attr]
    assert rs.owner(b"/srv/cache/x") is None and rs.owner(b"/srv/a/x.tmp") is None
    assert rs.owner(b"/srv/flat/x").path == b"/srv/flat"  # type: ignore[union-attr]
    assert rs.owner(b"/srv/flat/sub/x") is None
    assert rs.owner(b"/etc/passwd").path == b"/etc/passwd"  # type: ignore[union-attr]
    assert rs.owner(b"/etc/group") is None
    assert [r.path for r in rs.roots_under(b"/srv")] == [b"/srv", b"/srv/flat"]
    defaults = {r.path for r in default_roots()}
    assert {
        b"/usr/bin/ls",
        b"/bin/login",
        b"/etc/shadow",
        b"/etc/sudoers.d",
        b"/var/spool/cron",
        b"/etc/systemd/system",
        b"/root/.ssh/authorized_keys",
    } <= defaults
    assert all(r.important for r in default_roots())


def test_report_times_match_datetime_isoformat() -> None:
    import random
    from datetime import UTC, datetime

    from hostward.agent.fim.diff import _ts

    rng = random.Random(7)
    values = [0, 1, -1, 500, 1500, -500, -1500, 999_999_500, 1_700_000_000_999_999_500, -1_999_999_500]
    values += [rng.randrange(-(2**40), 2**62) for _ in range(20_000)]
    # Exact half microseconds: rounded half to even, of the float, as fromtimestamp does.
    values += [
        rng.randrange(0, 2_000_000_000) * 10**9 + rng.randrange(0, 1000) * 1000 + 500 for _ in range(20_000)
    ]
    for ns in values:
        assert _ts(ns) == datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds"), ns
