"""FIM scanner on real temp trees: attributes, bad input, quick vs full, throttle."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from hostward.agent.fim.config import RootSet, WatchRoot
from hostward.agent.fim.scan import (
    FS_IMMUTABLE_FL,
    Entry,
    ScanCancelled,
    Scanner,
    Throttle,
    pack_xattrs,
    racy_paths,
    stat_key,
    unpack_xattrs,
)
from tests.conftest import need


def _b(p: Path | str) -> bytes:
    return os.fsencode(str(p))


def _scan(root: Path, **kw: object) -> dict[bytes, Entry]:
    scanner = Scanner(workers=2, racy_ns=0)
    result = scanner.scan([WatchRoot(_b(root), **kw)])  # type: ignore[arg-type]
    return {p: Entry._make(r) for p, r in result.rows.items()}


def test_regular_file_attributes_match_the_kernel_and_hashlib(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    data = os.urandom(300_000) + b"tail"  # above the single-read size: exercises the chunked path
    f.write_bytes(data)
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello\n")
    empty = tmp_path / "empty"
    empty.touch()
    rows = _scan(tmp_path)
    for path, content in ((f, data), (small, b"hello\n"), (empty, b"")):
        e = rows[_b(path)]
        st = os.lstat(path)
        assert e.sha256 == hashlib.sha256(content).digest()
        assert (e.size, e.mode, e.uid, e.gid, e.ino) == (
            st.st_size,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_ino,
        )
        assert (e.mtime_ns, e.ctime_ns) == (st.st_mtime_ns, st.st_ctime_ns)
        assert e.error is None and e.target is None
    root_row = rows[_b(tmp_path)]
    assert stat.S_ISDIR(root_row.mode) and root_row.sha256 is None


def test_symlinks_are_recorded_never_followed_including_loops(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    os.symlink("f", tmp_path / "d" / "link")
    os.symlink("loop-b", tmp_path / "loop-a")
    os.symlink("loop-a", tmp_path / "loop-b")
    os.symlink(".", tmp_path / "d" / "self")  # a directory loop
    os.symlink("/", tmp_path / "to-root")
    rows = _scan(tmp_path)
    assert rows[_b(tmp_path / "d" / "link")].target == b"f"
    assert rows[_b(tmp_path / "loop-a")].target == b"loop-b"
    assert rows[_b(tmp_path / "d" / "self")].target == b"."
    assert rows[_b(tmp_path / "to-root")].sha256 is None
    # Nothing below the symlinked directories was walked.
    assert not any(b"/self/" in p or b"/to-root/" in p for p in rows)
    assert len(rows) == 8  # root, d, d/f, d/link, d/self, loop-a, loop-b, to-root


def test_special_files_get_attributes_only(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rows = _scan(tmp_path)  # would block forever if the FIFO were opened for reading without a writer
    e = rows[_b(fifo)]
    assert stat.S_ISFIFO(e.mode) and e.sha256 is None and e.error is None


def test_non_utf8_names_are_kept_as_bytes(tmp_path: Path) -> None:
    raw = _b(tmp_path) + b"/caf\xe9-\xff.txt"
    with open(raw, "wb") as f:
        f.write(b"latin-1 name")
    rows = _scan(tmp_path)
    assert rows[raw].sha256 == hashlib.sha256(b"latin-1 name").digest()


def test_nested_roots_scan_each_path_once_under_its_own_settings(tmp_path: Path) -> None:
    (tmp_path / "inner" / "deep").mkdir(parents=True)
    (tmp_path / "inner" / "deep" / "x").write_text("x")
    (tmp_path / "inner" / "y.log").write_text("y")
    (tmp_path / "z.log").write_text("z")
    outer = WatchRoot(_b(tmp_path), ignore=("*.log",))
    inner = WatchRoot(_b(tmp_path / "inner"), recursive=False)
    rootset = RootSet([outer, inner])
    rows = Scanner(racy_ns=0).scan(rootset.roots, all_roots=rootset).rows
    assert _b(tmp_path / "z.log") not in rows  # ignored by the outer root
    assert _b(tmp_path / "inner" / "y.log") in rows  # the inner root has no ignore globs
    assert _b(tmp_path / "inner" / "deep") in rows  # non-recursive: the child directory itself...
    assert _b(tmp_path / "inner" / "deep" / "x") not in rows  # ...but nothing below it


def test_file_roots_and_missing_roots(tmp_path: Path) -> None:
    f = tmp_path / "passwd"
    f.write_text("root:x:0:0\n")
    rows = Scanner(racy_ns=0).scan([WatchRoot(_b(f)), WatchRoot(_b(tmp_path / "missing"))]).rows
    assert list(rows) == [_b(f)]


def test_xattrs_recorded_and_packed_canonically(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_text("x")
    try:
        os.setxattr(f, "user.b", b"2")
        os.setxattr(f, "user.a", b"\x00\x01")
    except OSError as exc:
        pytest.skip(f"user xattrs unsupported here: {exc}")
    e = _scan(tmp_path)[_b(f)]
    assert unpack_xattrs(e.xattrs) == {"user.a": b"\x00\x01", "user.b": b"2"}
    assert pack_xattrs([("user.b", b"2"), ("user.a", b"\x00\x01")]) == e.xattrs


def test_immutable_flag_is_read(tmp_path: Path) -> None:
    need("root", "chattr +i needs CAP_LINUX_IMMUTABLE")
    f = tmp_path / "locked"
    f.write_text("x")
    subprocess.run(["chattr", "+i", str(f)], check=True)
    try:
        e = _scan(tmp_path)[_b(f)]
        assert e.flags is not None and e.flags & FS_IMMUTABLE_FL
    finally:
        subprocess.run(["chattr", "-i", str(f)], check=True)
    assert not (_scan(tmp_path)[_b(f)].flags or 0) & FS_IMMUTABLE_FL


_UNREADABLE_SCRIPT = """
import os, sys
from hostward.agent.fim.config import WatchRoot
from hostward.agent.fim.scan import Scanner, Entry
if len(sys.argv) > 2:
    os.setgid(65534); os.setuid(65534)
rows = Scanner().scan([WatchRoot(os.fsencode(sys.argv[1]))]).rows
for p, r in sorted(rows.items()):
    e = Entry._make(r)
    print(os.fsdecode(p), e.error, e.sha256 is None, e.size)
"""


def test_unreadable_files_are_recorded_with_an_error_not_a_crash() -> None:
    base = Path(tempfile.mkdtemp(prefix="hw-fim-unreadable-"))
    try:
        os.chmod(base, 0o755)
        secret = base / "secret"
        secret.write_text("top secret")
        os.chmod(secret, 0o000)
        locked_dir = base / "locked"
        locked_dir.mkdir()
        (locked_dir / "inside").write_text("x")
        os.chmod(locked_dir, 0o000)
        (base / "open").write_text("public")
        os.chmod(base / "open", 0o644)
        args = [sys.executable, "-c", _UNREADABLE_SCRIPT, str(base)]
        if os.geteuid() == 0:
            args.append("drop")  # root reads everything: scan as nobody instead
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        lines = {line.split(" ")[0]: line.split(" ")[1:] for line in out.splitlines()}
        assert lines[str(secret)] == ["EACCES", "True", "10"]
        assert lines[str(locked_dir)][0] == "EACCES"
        assert lines[str(base / "open")] == ["None", "False", "6"]
        assert str(locked_dir / "inside") not in lines
    finally:
        for p in (base / "locked", base / "secret"):
            os.chmod(p, 0o700)
        subprocess.run(["rm", "-rf", str(base)], check=True)


def test_paths_vanishing_during_a_scan_are_skipped(tmp_path: Path) -> None:
    for d in range(20):
        sub = tmp_path / f"d{d}"
        sub.mkdir()
        for i in range(100):
            (sub / f"f{i}").write_bytes(os.urandom(64))
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for d in range(20):
                for i in range(0, 100, 3):
                    p = tmp_path / f"d{d}" / f"f{i}"
                    try:
                        p.unlink()
                    except FileNotFoundError:
                        p.write_bytes(b"back")

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(5):
            rows = _scan(tmp_path)
            for path, e in rows.items():
                assert path.startswith(_b(tmp_path))
                assert e.error is None
    finally:
        stop.set()
        t.join()
    # Direct calls on a path that does not exist.
    scanner = Scanner()
    assert scanner.scan_path(_b(tmp_path / "nope")) is None
    assert scanner._scan_file(_b(tmp_path / "nope"), bytearray(16)) is None


def test_quick_check_reuses_unchanged_rows_and_full_rehashes(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"f{i}").write_bytes(os.urandom(100))
    scanner = Scanner(racy_ns=0)
    root = [WatchRoot(_b(tmp_path))]
    base = scanner.scan(root)
    keys = {p: stat_key(r) for p, r in base.rows.items()}
    quick = scanner.scan(root, keys=keys)
    assert quick.stats.files_hashed == 0 and quick.stats.reused == 51  # 50 files + the directory
    assert quick.rows == {} and quick.unchanged == set(base.rows)
    full = scanner.scan(root)
    assert full.stats.files_hashed == 50 and full.rows == base.rows
    (tmp_path / "f3").write_bytes(os.urandom(100))  # same size; ctime moves
    again = scanner.scan(root, keys=keys)
    assert again.stats.files_hashed == 1
    assert set(again.rows) == {_b(tmp_path / "f3")}
    assert again.rows[_b(tmp_path / "f3")] != base.rows[_b(tmp_path / "f3")]


def test_racy_entries_are_rehashed(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    scanner = Scanner()  # default window: everything just written is racy
    base = scanner.scan([WatchRoot(_b(tmp_path))])
    assert _b(tmp_path / "f") in base.racy
    keys = {p: stat_key(r) for p, r in base.rows.items()}
    quick = scanner.scan([WatchRoot(_b(tmp_path))], keys=keys, racy=base.racy)
    assert quick.stats.files_hashed == 1
    assert racy_paths(base.rows.values(), 0) == set(base.rows)
    assert racy_paths(base.rows.values(), 0, window_ns=0) == set()


def test_throttle_spends_tokens_at_the_configured_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    t = Throttle(1_000_000, clock=lambda: now[0], sleep=sleep)
    t.take(1_048_576)  # the initial burst covers the first MiB
    assert slept == []
    t.take(500_000)
    assert slept == [pytest.approx(0.5, rel=0.01)]
    now[0] += 10.0
    t.take(100)  # refilled (up to the burst)
    assert len(slept) == 1


def test_throttled_scan_is_slowed_to_the_rate(tmp_path: Path) -> None:
    for i in range(8):
        (tmp_path / f"f{i}").write_bytes(os.urandom(512 * 1024))
    import time

    start = time.monotonic()
    Scanner(workers=2, rate=4 * 1024 * 1024).scan([WatchRoot(_b(tmp_path))])
    elapsed = time.monotonic() - start
    # 4 MiB at 4 MiB/s with a 1 MiB initial burst: at least ~0.75 s.
    assert elapsed >= 0.6


def test_parallel_walk_records_the_same_as_a_sequential_one(tmp_path: Path) -> None:
    for d in range(30):
        sub = tmp_path / f"d{d}" / "deeper" / f"x{d % 3}"
        sub.mkdir(parents=True)
        for i in range(20):
            (sub / f"f{i}").write_bytes(os.urandom(32))
        os.symlink("deeper", tmp_path / f"d{d}" / "link")
    root = [WatchRoot(_b(tmp_path))]
    one = Scanner(workers=1, racy_ns=0).scan(root)
    four = Scanner(workers=4, racy_ns=0).scan(root)
    assert one.rows == four.rows and len(one.rows) == 1 + 30 * (3 + 20 + 1)
    keys = {p: stat_key(r) for p, r in one.rows.items()}
    quick = Scanner(workers=4, racy_ns=0).scan(root, keys=keys)
    assert quick.rows == {} and quick.unchanged == set(one.rows)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ScanCancelled):
        Scanner(workers=3).scan(root, cancel=cancel)


def test_forked_workers_record_the_same_as_threads(tmp_path: Path) -> None:
    for d in range(40):
        sub = tmp_path / f"d{d}" / "s"
        sub.mkdir(parents=True)
        for i in range(10):
            (sub / f"f{i}").write_bytes(os.urandom(100 + i))
    (tmp_path / "top.txt").write_text("top")
    root = [WatchRoot(_b(tmp_path)), WatchRoot(_b(tmp_path / "d3" / "s" / "f1"))]
    rootset = RootSet(root)
    threads = Scanner(workers=2, racy_ns=0).scan(root, all_roots=rootset)
    forked = Scanner(workers=2, racy_ns=0, processes=True).scan(root, all_roots=rootset)
    assert forked.rows == threads.rows and forked.stats.files_hashed == threads.stats.files_hashed == 401
    keys = {p: stat_key(r) for p, r in threads.rows.items()}
    (tmp_path / "d7" / "s" / "f2").write_bytes(b"changed")
    (tmp_path / "d9" / "s" / "f3").unlink()
    quick = Scanner(workers=2, racy_ns=0, processes=True).scan(root, all_roots=rootset, keys=keys)
    same_threaded = Scanner(workers=2, racy_ns=0).scan(root, all_roots=rootset, keys=keys)
    changed_dir = _b(tmp_path / "d9" / "s")  # its mtime moved with the unlink
    assert set(quick.rows) == {_b(tmp_path / "d7" / "s" / "f2"), changed_dir} == set(same_threaded.rows)
    assert quick.missing == {_b(tmp_path / "d9" / "s" / "f3")} == same_threaded.missing
    assert quick.stats.reused == same_threaded.stats.reused == len(keys) - 3
