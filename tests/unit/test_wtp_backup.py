"""The content-addressed backup used by WTP and the ransomware snapshots (no root needed)."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from hostward.agent.ransomware import RansomwareError, RansomwarePolicy, SnapshotStore
from hostward.agent.wtp.backup import BlobStore, capture, load_manifest, matches, save_manifest, write_entry


def _tree(root: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "index.html").write_text("home")
    (root / "a" / "same1.txt").write_text("dup")
    (root / "a" / "b" / "same2.txt").write_text("dup")
    (root / "a" / "skip.log").write_text("log")
    os.symlink("index.html", root / "link")
    os.chmod(root / "index.html", 0o640)


def test_capture_dedups_and_round_trips(tmp_path: Path) -> None:
    www = tmp_path / "www"
    _tree(www)
    store = BlobStore(str(tmp_path / "bk"))
    manifest = capture(store, str(www), lambda p: p.endswith(".log"))
    assert str(www / "a" / "skip.log") not in manifest
    assert (
        manifest[str(www / "a" / "same1.txt")].sha256 == manifest[str(www / "a" / "b" / "same2.txt")].sha256
    )
    assert (
        len(list((tmp_path / "bk" / "blobs").rglob("*"))) - len(list((tmp_path / "bk" / "blobs").iterdir()))
        == 2
    )
    assert manifest[str(www / "link")].kind == "symlink"
    assert manifest[str(www / "index.html")].mode == 0o640
    save_manifest(str(tmp_path / "m.json"), manifest, {"taken_at": "now"})
    loaded, meta = load_manifest(str(tmp_path / "m.json"))
    assert loaded == manifest and meta == {"taken_at": "now"}
    page = www / "index.html"
    page.write_text("defaced")
    os.chmod(page, 0o777)
    assert not matches(str(page), manifest[str(page)])
    write_entry(store, str(page), manifest[str(page)])
    assert page.read_text() == "home" and stat.S_IMODE(page.stat().st_mode) == 0o640
    assert matches(str(page), manifest[str(page)])
    assert not [p for p in os.listdir(www) if p.startswith(".hw-restore-")]


def test_snapshots_retention_and_restore(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _tree(docs)
    (docs / "excl").mkdir()
    policy = RansomwarePolicy(protected_dirs=[str(docs)], excluded_dirs=[str(docs / "excl")])
    store = SnapshotStore(str(tmp_path / "snaps"), keep=2)
    first = store.take(policy)
    (docs / "index.html").write_text("v2")
    second = store.take(policy)
    (docs / "index.html").write_text("v3")
    third = store.take(policy)
    assert [s.id for s in store.list()] == [second.id, third.id]
    taken = datetime.fromisoformat(third.taken_at)
    assert not store.due(taken + timedelta(hours=23), 86400)
    assert store.due(taken + timedelta(hours=24), 86400)
    assert SnapshotStore(str(tmp_path / "empty")).due(taken, 86400)
    with pytest.raises(RansomwareError, match="not found"):
        store.restore(first.id)
    (docs / "index.html").write_text("encrypted")
    (docs / "index.html").rename(docs / "index.html.locked")
    (docs / "excl" / "keep.me").write_text("excluded stays")
    (docs / ".bait.docx").write_text("bait")
    result = store.restore(second.id, keep=lambda p: p.endswith(".bait.docx"))
    assert (docs / "index.html").read_text() == "v2"
    assert not (docs / "index.html.locked").exists()
    assert (docs / "excl" / "keep.me").exists() and (docs / ".bait.docx").exists()
    assert str(docs / "index.html") in result.restored
    assert len(result.displaced) == 1 and Path(result.displaced[0]).read_text() == "encrypted"
    # blobs only referenced by the pruned snapshot are gone
    assert not any(
        p.read_bytes() == b"home" for p in (tmp_path / "snaps" / "blobs").rglob("*") if p.is_file()
    )
