"""FimEngine on real temp trees: baseline/check, quiet rules, --full vs quick, package classification."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostward.agent.fim.config import WatchRoot
from hostward.agent.fim.diff import Change
from hostward.agent.fim.engine import FimEngine
from hostward.agent.fim.pkgdb import DpkgIndex
from hostward.agent.fim.scan import Scanner
from tests.conftest import need


def _b(p: Path | str) -> bytes:
    return os.fsencode(str(p))


def by_path(changes: list[Change]) -> dict[bytes, Change]:
    return {c.path: c for c in changes}


def sig(changes: list[Change]) -> list[Change]:
    """Without echoes (a directory's mtime moving because an entry was added or removed)."""
    return [c for c in changes if c.significant()]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "tree"
    (t / "etc").mkdir(parents=True)
    (t / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (t / "etc" / "motd").write_text("hello\n")
    (t / "bin").mkdir()
    (t / "bin" / "tool").write_bytes(os.urandom(5000))
    return t


def engine_for(tmp_path: Path, roots: list[WatchRoot], **kw: object) -> FimEngine:
    engine, _ = FimEngine.init(
        tmp_path / "fim.db", roots, scanner=Scanner(racy_ns=0), packages=kw.pop("packages", None), **kw
    )  # type: ignore[arg-type]
    return engine


def test_first_baseline_is_silent_and_unchanged_tree_reports_nothing(tmp_path: Path, tree: Path) -> None:
    engine = engine_for(tmp_path, [WatchRoot(_b(tree))])
    result = engine.check()
    assert result.changes == [] and not result.changed
    assert result.stats.files_hashed == 0 and result.stats.reused == 6  # 3 directories, 3 files
    engine.close()


def test_add_remove_modify_chmod_touch_xattr(tmp_path: Path, tree: Path) -> None:
    engine = engine_for(tmp_path, [WatchRoot(_b(tree))])
    (tree / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nevil:x:0:0::/:/bin/sh\n")
    (tree / "etc" / "motd").unlink()
    (tree / "bin" / "backdoor").write_text("#!/bin/sh\n")
    os.chmod(tree / "bin" / "tool", 0o4755)
    os.utime(tree / "etc", ns=(1, 1_000_000_000))
    os.setxattr(tree / "bin" / "backdoor", "user.mark", b"1")
    changes = by_path(engine.check().changes)
    passwd = changes[_b(tree / "etc" / "passwd")]
    assert passwd.action == "changed" and {"sha256", "size", "mtime"} <= set(passwd.attrs)
    assert passwd.old is not None and passwd.new is not None and passwd.old.sha256 != passwd.new.sha256
    assert changes[_b(tree / "etc" / "motd")].action == "removed"
    assert changes[_b(tree / "bin" / "backdoor")].action == "added"
    assert changes[_b(tree / "bin" / "backdoor")].new.xattrs  # type: ignore[union-attr]
    tool = changes[_b(tree / "bin" / "tool")]
    assert tool.attrs == ("mode", "ctime") and tool.operation == "attributes"
    assert "mtime" in changes[_b(tree / "etc")].attrs
    # The baseline moved on: the same changes are not reported twice.
    assert engine.check().changes == []
    engine.close()


def test_touch_is_a_timestamp_change(tmp_path: Path, tree: Path) -> None:
    engine = engine_for(tmp_path, [WatchRoot(_b(tree))])
    os.utime(tree / "bin" / "tool", ns=(1_000_000_000, 2_000_000_000))
    (change,) = engine.check().changes
    assert change.attrs == ("mtime", "ctime") and change.significant() and change.operation == "modify"
    engine.close()


def test_chown_and_immutable_flag(tmp_path: Path, tree: Path) -> None:
    need("root", "chown and chattr +i need root")
    engine = engine_for(tmp_path, [WatchRoot(_b(tree))])
    os.chown(tree / "etc" / "passwd", 65534, 65534)
    subprocess.run(["chattr", "+i", str(tree / "bin" / "tool")], check=True)
    try:
        changes = by_path(engine.check().changes)
    finally:
        subprocess.run(["chattr", "-i", str(tree / "bin" / "tool")], check=True)
    assert set(changes[_b(tree / "etc" / "passwd")].attrs) == {"uid", "gid", "ctime"}
    tool = changes[_b(tree / "bin" / "tool")]
    assert "flags" in tool.attrs and tool.operation == "attributes"
    engine.close()


def test_standalone_check_without_update_keeps_reporting(tmp_path: Path, tree: Path) -> None:
    engine = engine_for(tmp_path, [WatchRoot(_b(tree))])
    (tree / "etc" / "motd").write_text("changed\n")
    assert len(engine.check(update=False).changes) == 1
    assert len(engine.check(update=False).changes) == 1
    engine.close()


def test_full_check_catches_what_metadata_hides(tmp_path: Path, tree: Path) -> None:
    """A content change that kept every timestamp (clock games) is only seen by --full.

    Simulated by editing the recorded hash: the file system side is untouched, so stat says
    "unchanged" and only a rehash can tell.
    """
    engine = engine_for(tmp_path, [WatchRoot(_b(tree))])
    path = _b(tree / "bin" / "tool")
    engine.store._conn.execute("UPDATE entries SET sha256 = ? WHERE path = ?", (b"\0" * 32, path))
    assert engine.check(update=False).changes == []
    full = engine.check(full=True, update=False)
    assert [c.path for c in full.changes] == [path] and full.changes[0].attrs == ("sha256",)
    assert full.stats.files_hashed == 3
    engine.close()


def test_new_roots_are_baselined_silently_and_removed_roots_dropped(tmp_path: Path, tree: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "f").write_text("f")
    engine = engine_for(tmp_path, [WatchRoot(_b(tree / "etc"))])
    engine.set_roots([WatchRoot(_b(tree / "etc")), WatchRoot(_b(extra))])
    result = engine.check()
    assert result.changes == [] and result.baselined_roots == [_b(extra)]
    (extra / "g").write_text("g")
    assert [c.path for c in sig(engine.check().changes)] == [_b(extra / "g")]
    engine.set_roots([WatchRoot(_b(extra))])
    assert engine.check().changes == []
    assert not any(p.startswith(_b(tree)) for p in engine.store.load())
    engine.close()


def test_missing_important_file_appearing_is_an_addition(tmp_path: Path, tree: Path) -> None:
    keys = tree / "root" / ".ssh" / "authorized_keys"
    engine = engine_for(tmp_path, [WatchRoot(_b(keys), important=True)])
    keys.parent.mkdir(parents=True)
    keys.write_text("ssh-ed25519 AAAA attacker\n")
    (change,) = engine.check().changes
    assert change.action == "added" and change.important and change.path == _b(keys)
    engine.close()


def test_operations_filter_what_is_reported_not_what_is_recorded(tmp_path: Path, tree: Path) -> None:
    root = WatchRoot(_b(tree), operations=frozenset({"create", "delete"}))
    engine = engine_for(tmp_path, [root])
    (tree / "etc" / "motd").write_text("modified\n")
    (tree / "new").write_text("n")
    assert [c.path for c in sig(engine.check().changes)] == [_b(tree / "new")]
    assert engine.store.get(_b(tree / "etc" / "motd"))[4] == len("modified\n")  # type: ignore[index]
    engine.close()


def test_check_paths_rechecks_files_dirs_and_subtrees(tmp_path: Path, tree: Path) -> None:
    engine = engine_for(tmp_path, [WatchRoot(_b(tree))])
    (tree / "etc" / "motd").write_text("x\n")
    assert [c.path for c in engine.check_paths([_b(tree / "etc" / "motd")])] == [_b(tree / "etc" / "motd")]
    shutil.rmtree(tree / "bin")
    removed = by_path(engine.check_paths([_b(tree / "bin")]))
    assert set(removed) == {_b(tree / "bin"), _b(tree / "bin" / "tool")}
    (tree / "new" / "deep").mkdir(parents=True)
    (tree / "new" / "deep" / "f").write_text("f")
    added = by_path(engine.check_paths([_b(tree / "new")]))
    assert set(added) == {_b(tree / "new"), _b(tree / "new" / "deep"), _b(tree / "new" / "deep" / "f")}
    assert engine.check_paths([b"/somewhere/else"]) == []
    assert sig(engine.check().changes) == []
    engine.close()


# ---- package classification -------------------------------------------------------------------


def _dpkg_regular_file() -> tuple[str, bytes]:
    """A small regular file shipped by an installed package, with its md5sums entry."""
    if shutil.which("dpkg") is None:
        pytest.skip("no dpkg on this host")
    listing = subprocess.run(["dpkg", "-L", "coreutils"], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        p = line.strip()
        if p.startswith("/usr/share/doc/") or not p.endswith(("ls", "cat", "true")):
            continue
        if os.path.isfile(p) and not os.path.islink(p):
            return p, Path(p).read_bytes()
    pytest.skip("no suitable coreutils file found")


def test_package_update_label_uses_the_real_dpkg_database(tmp_path: Path) -> None:
    pkg_path, genuine = _dpkg_regular_file()
    fs_root = tmp_path / "fsroot"
    copy = fs_root / pkg_path.lstrip("/")
    copy.parent.mkdir(parents=True)
    copy.write_bytes(genuine + b"\x00tampered")  # start from a modified copy
    index = DpkgIndex("/", fs_root=_b(fs_root))
    engine = engine_for(tmp_path, [WatchRoot(_b(copy.parent))], packages=index)
    copy.write_bytes(genuine)  # "upgrade": content now matches dpkg's md5sums
    (change,) = engine.check().changes
    assert change.label == "package_update"
    assert change.package is not None and change.package.package == "coreutils" and change.package.matches
    copy.write_bytes(genuine + b"#")  # tampering with a package-owned file
    (tampered,) = engine.check().changes
    assert tampered.label == "change" and tampered.package is not None and not tampered.package.matches
    (fs_root / pkg_path.lstrip("/")).with_name("not-packaged").write_text("x")
    (other,) = sig(engine.check().changes)
    assert other.package is None and other.label == "change"
    engine.close()


def _fake_dpkg(root: Path, files: dict[str, bytes], package: str = "demo") -> None:
    import hashlib

    info = root / "var" / "lib" / "dpkg" / "info"
    info.mkdir(parents=True, exist_ok=True)
    lines = [f"{hashlib.md5(c).hexdigest()}  {p.lstrip('/')}" for p, c in files.items()]
    # Like dpkg: written aside and renamed into place (which moves the directory's mtime).
    (info / f"{package}.md5sums.new").write_text("\n".join(lines) + "\n")
    os.replace(info / f"{package}.md5sums.new", info / f"{package}.md5sums")
    (root / "var" / "lib" / "dpkg" / "status").write_text(
        f"Package: {package}\nStatus: install ok installed\n\n"
    )
    for name in ("lock", "lock-frontend"):
        (root / "var" / "lib" / "dpkg" / name).touch()


@pytest.fixture
def lock_holder() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def _hold_lock(path: Path) -> subprocess.Popen[bytes]:
    code = (
        "import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
    return proc


def test_changes_wait_while_dpkg_holds_its_lock(tmp_path: Path, lock_holder: list) -> None:
    fs_root = tmp_path / "fs"
    (fs_root / "opt" / "demo").mkdir(parents=True)
    target = fs_root / "opt" / "demo" / "tool"
    target.write_bytes(b"v1")
    db_root = tmp_path / "dpkgroot"
    _fake_dpkg(db_root, {"/opt/demo/tool": b"v1"})
    index = DpkgIndex(db_root, fs_root=_b(fs_root))
    engine = engine_for(tmp_path, [WatchRoot(_b(target.parent))], packages=index)
    proc = _hold_lock(db_root / "var" / "lib" / "dpkg" / "lock")
    lock_holder.append(proc)
    assert index.busy()
    # dpkg unpacks next to the file, then renames over it, then installs the new md5sums.
    (target.parent / "tool.dpkg-new").write_bytes(b"v2")
    assert engine.check().changes == [] and engine.deferred == 2  # the file and its directory
    os.replace(target.parent / "tool.dpkg-new", target)
    assert engine.check_paths([_b(target), _b(target.parent / "tool.dpkg-new")]) == []
    time.sleep(0.01)
    _fake_dpkg(db_root, {"/opt/demo/tool": b"v2"})
    assert engine.poll() == []  # still locked
    proc.kill()
    proc.wait()
    assert not index.busy()
    (change,) = sig(engine.poll())
    assert change.path == _b(target) and change.label == "package_update"
    assert engine.deferred == 0 and engine.check().changes == []
    engine.close()


def test_defer_limit_bounds_how_long_a_held_lock_hides_changes(tmp_path: Path, lock_holder: list) -> None:
    fs_root = tmp_path / "fs"
    (fs_root / "opt").mkdir(parents=True)
    (fs_root / "opt" / "f").write_bytes(b"v1")
    db_root = tmp_path / "dpkgroot"
    _fake_dpkg(db_root, {"/opt/f": b"v1"})
    now = [0.0]
    index = DpkgIndex(db_root, fs_root=_b(fs_root))
    engine, _ = FimEngine.init(
        tmp_path / "db", [WatchRoot(_b(fs_root / "opt"))], scanner=Scanner(racy_ns=0), packages=index
    )
    engine._clock = lambda: now[0]
    lock_holder.append(_hold_lock(db_root / "var" / "lib" / "dpkg" / "lock-frontend"))
    (fs_root / "opt" / "f").write_bytes(b"evil")
    assert engine.check().changes == []
    now[0] = engine.defer_limit_s + 1
    (change,) = engine.poll()
    assert change.label == "change" and change.package is not None and not change.package.matches
    engine.close()


def test_dpkg_index_refreshes_incrementally_and_remembers_dropped_paths(tmp_path: Path) -> None:
    _fake_dpkg(tmp_path, {"/usr/bin/a": b"a", "/usr/bin/b": b"b"})
    index = DpkgIndex(tmp_path)
    owner = index.owner(b"/usr/bin/a")
    assert owner is not None and owner.package == "demo" and owner.algorithm == "md5"
    time.sleep(0.01)
    _fake_dpkg(tmp_path, {"/usr/bin/a": b"a2"})
    os.utime(tmp_path / "var" / "lib" / "dpkg" / "info", ns=(1, 2))  # force the directory mtime to move
    index.refresh()
    assert index.owner(b"/usr/bin/b") is None and index.dropped(b"/usr/bin/b") == "demo"
    (tmp_path / "var" / "lib" / "dpkg" / "info" / "demo.md5sums").unlink()
    index.refresh()
    assert index.owner(b"/usr/bin/a") is None and index.dropped(b"/usr/bin/a") == "demo"


def test_dpkg_conffiles_and_usrmerge_aliases(tmp_path: Path) -> None:
    _fake_dpkg(tmp_path, {"/bin/ls": b"ls"})
    status = tmp_path / "var" / "lib" / "dpkg" / "status"
    status.write_text(
        "Package: ssh\nStatus: install ok installed\nConffiles:\n"
        " /etc/ssh/ssh_config 0123456789abcdef0123456789abcdef\nDescription: x\n\n"
    )
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    os.symlink("usr/bin", tmp_path / "bin")
    index = DpkgIndex(tmp_path)
    assert index.owner(b"/usr/bin/ls") is not None  # recorded as /bin/ls, reached through /usr/bin
    conf = index.owner(b"/etc/ssh/ssh_config")
    assert conf is not None and conf.package == "ssh" and conf.digest == "0123456789abcdef0123456789abcdef"
    index.set_interest([b"/etc/ssh"])
    assert index.owner(b"/usr/bin/ls") is None and index.owner(b"/etc/ssh/ssh_config") is not None


def test_rpm_dump_parser() -> None:
    from hostward.agent.fim.pkgdb import parse_rpm_dump

    text = (
        "/usr/bin/ls 142144 1700000000 " + "ab" * 32 + " 0100755 root root 0 0 0 X\n"
        "/usr/share/doc/my file 10 1700000000 " + "cd" * 16 + " 0100644 root root 0 1 0 X\n"
        "/usr/lib/link 7 1700000000 " + "0" * 64 + " 0120777 root root 0 0 0 target\n"
    )
    parsed = parse_rpm_dump(text)
    assert parsed[b"/usr/bin/ls"] == "ab" * 32
    assert parsed[b"/usr/share/doc/my file"] == "cd" * 16


def test_a_package_run_inside_one_scan_defers_its_changes(tmp_path: Path, tree: Path) -> None:
    from tests.fakes.packages import FlickeringPackages

    packages = FlickeringPackages()
    engine = engine_for(tmp_path, [WatchRoot(_b(tree))], packages=packages)
    (tree / "bin" / "tool.dpkg-new").write_text("half-unpacked")
    packages.run_during_next_scan()
    assert engine.check_paths([_b(tree / "bin" / "tool.dpkg-new")]) == [] and engine.deferred == 1
    (tree / "bin" / "tool.dpkg-new").unlink()  # the run finished: renamed into place / cleaned up
    assert sig(engine.poll()) == [] and engine.deferred == 0
    assert sig(engine.check().changes) == []  # only the directory's mtime moved
    engine.close()


def test_interrupted_init_keeps_the_previous_baseline(tmp_path: Path, tree: Path) -> None:
    import threading

    from hostward.agent.fim.scan import ScanCancelled
    from hostward.agent.fim.store import BaselineStore

    engine_for(tmp_path, [WatchRoot(_b(tree))]).close()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ScanCancelled):
        FimEngine.init(tmp_path / "fim.db", [WatchRoot(_b(tmp_path))], cancel=cancel, packages=None)
    with BaselineStore.open(tmp_path / "fim.db", create=False) as store:
        assert store.count() == 6 and store.roots()[0].path == _b(tree)
    assert not list(tmp_path.glob(".fim.db.*.tmp"))


def test_standalone_check_reports_even_while_dpkg_runs(tmp_path: Path, lock_holder: list) -> None:
    fs_root = tmp_path / "fs"
    (fs_root / "opt").mkdir(parents=True)
    (fs_root / "opt" / "f").write_bytes(b"v1")
    db_root = tmp_path / "dpkgroot"
    _fake_dpkg(db_root, {"/opt/f": b"v1"})
    engine = engine_for(
        tmp_path, [WatchRoot(_b(fs_root / "opt"))], packages=DpkgIndex(db_root, fs_root=_b(fs_root))
    )
    lock_holder.append(_hold_lock(db_root / "var" / "lib" / "dpkg" / "lock"))
    (fs_root / "opt" / "f").write_bytes(b"tampered")
    (change,) = engine.check(update=False).changes  # nothing to come back to later: report now
    assert change.label == "change" and engine.deferred == 0
    engine.close()


def _settle(db_root: Path, age_s: float = 60.0) -> None:
    """Date the fake dpkg database back, as an installed system's is (the cache wants a still one)."""
    then = time.time_ns() - int(age_s * 1e9)
    dpkg = db_root / "var" / "lib" / "dpkg"
    for p in (*dpkg.joinpath("info").iterdir(), dpkg / "info", dpkg / "status"):
        os.utime(p, ns=(then, then))


def _answers(index: DpkgIndex, paths: list[bytes]) -> list[object]:
    return [index.owner(p) for p in paths]


def test_dpkg_index_cache_gives_the_same_answers_and_follows_database_changes(tmp_path: Path) -> None:
    db_root, cache = tmp_path / "root", tmp_path / "fim.db.pkgindex"
    _fake_dpkg(db_root, {"/usr/bin/a": b"a", "/usr/bin/b": b"b", "/opt/x": b"x"})
    status = db_root / "var" / "lib" / "dpkg" / "status"
    status.write_text(
        "Package: demo\nStatus: install ok installed\nConffiles:\n"
        " /usr/bin/conf 0123456789abcdef0123456789abcdef\n /opt/conf 0123456789abcdef0123456789abcdef\n\n"
    )
    _settle(db_root)
    probe = [b"/usr/bin/a", b"/usr/bin/b", b"/usr/bin/conf", b"/opt/x", b"/opt/conf", b"/usr/bin/none"]

    first = DpkgIndex(db_root, cache_file=cache)
    first.set_interest([b"/usr/bin"])
    expected = _answers(first, probe)
    assert not first.cache_used and cache.exists() and oct(cache.stat().st_mode & 0o777) == "0o600"
    assert [o is not None for o in expected] == [True, True, True, False, False, False]

    second = DpkgIndex(db_root, cache_file=cache)
    second.set_interest([b"/usr/bin"])
    assert _answers(second, probe) == expected and second.cache_used

    # Another interest is another index: not answered from this cache.
    wider = DpkgIndex(db_root, cache_file=cache)
    wider.set_interest([b"/usr/bin", b"/opt"])
    assert wider.owner(b"/opt/x") is not None and wider.owner(b"/opt/conf") is not None
    assert not wider.cache_used

    # A package upgrade moves the database: the cache is not used, the new digests are.
    _fake_dpkg(db_root, {"/usr/bin/a": b"a2"})
    _settle(db_root, age_s=30.0)
    third = DpkgIndex(db_root, cache_file=cache)
    third.set_interest([b"/usr/bin"])
    owner = third.owner(b"/usr/bin/a")
    assert not third.cache_used and owner is not None and owner.digest == hashlib.md5(b"a2").hexdigest()
    assert third.owner(b"/usr/bin/b") is None and third.owner(b"/usr/bin/conf") is None
    fourth = DpkgIndex(db_root, cache_file=cache)
    fourth.set_interest([b"/usr/bin"])
    assert _answers(fourth, probe) == _answers(third, probe) and fourth.cache_used


def test_dpkg_index_cache_is_not_trusted_when_damaged_or_too_fresh(tmp_path: Path) -> None:
    db_root, cache = tmp_path / "root", tmp_path / "fim.db.pkgindex"
    _fake_dpkg(db_root, {"/usr/bin/a": b"a"})
    # Just written (as during a dpkg run): answered, but not cached.
    fresh = DpkgIndex(db_root, cache_file=cache)
    assert fresh.owner(b"/usr/bin/a") is not None and not cache.exists()
    _settle(db_root)
    DpkgIndex(db_root, cache_file=cache).refresh()
    assert cache.exists()
    for junk in (b"", b"{not json", b'{"key": 1}', b"[]", b'{"key": null, "files": 3, "conffiles": 4}'):
        cache.write_bytes(junk)
        index = DpkgIndex(db_root, cache_file=cache)
        owner = index.owner(b"/usr/bin/a")
        assert owner is not None and owner.package == "demo" and not index.cache_used
    # Right key, damaged body: rebuilt from the database.
    good = DpkgIndex(db_root, cache_file=cache)
    good.refresh()
    data = json.loads(cache.read_bytes())
    data["files"] = {"demo.md5sums": [1, "demo", [["zz", "x"]]]}
    cache.write_text(json.dumps(data))
    index = DpkgIndex(db_root, cache_file=cache)
    assert index.owner(b"/usr/bin/a") is not None and not index.cache_used
