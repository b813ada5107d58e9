"""Deterministic test tree for the FIM benchmarks: ~100,000 files, ~1 GB, small-file heavy.

Shape (seeded, the same on every machine): 100 x 10 x 10 leaf directories with 10 files each, sizes
drawn from a log-normal distribution (median ~1.7 KB, like a /usr tree) plus 40 large files of 4-20 MB;
about 2,000 symlinks including two loops. Content comes from a seeded 64 MiB pool with a per-file header,
so every file hashes differently.

``ensure_tree`` builds the tree or repairs it to its pristine state (files rewritten when missing or of
the wrong size, files outside the manifest removed), so benchmarks can reuse it between runs.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

SEED = 20240611
POOL = 64 * 1024 * 1024
TOP, MID, LEAF, PER_DIR = 100, 10, 10, 10
LARGE = 40
SYMLINKS = 2000
MAX_SMALL = 4 * 1024 * 1024
ADDED_DIR = "zz-added"


@dataclass
class Tree:
    root: Path
    files: list[str]  # relative paths of regular files, sorted
    sizes: dict[str, int]


def _plan() -> tuple[dict[str, int], list[tuple[str, str]]]:
    rng = random.Random(SEED)
    sizes: dict[str, int] = {}
    mu = math.log(1700)
    for a in range(TOP):
        for b in range(MID):
            for c in range(LEAF):
                for i in range(PER_DIR):
                    size = min(int(rng.lognormvariate(mu, 1.7)), MAX_SMALL)
                    sizes[f"d{a:02d}/s{b}/t{c}/f{i}.dat"] = size
    for k in range(LARGE):
        a, b = rng.randrange(TOP), rng.randrange(MID)
        sizes[f"d{a:02d}/s{b}/big{k}.bin"] = rng.randrange(4, 21) * 1024 * 1024
    links: list[tuple[str, str]] = []
    names = sorted(sizes)
    for k in range(SYMLINKS):
        target = names[rng.randrange(len(names))]
        links.append((f"d{k % TOP:02d}/link{k}", "../" + target))
    links += [("d00/loop-a", "loop-b"), ("d00/loop-b", "loop-a"), ("d01/loop-dir", ".")]
    return sizes, links


def _pool() -> bytes:
    return random.Random(SEED + 1).randbytes(POOL)


def content(rel: str, size: int, pool: bytes) -> bytes:
    header = f"{rel}\n".encode()
    body_len = max(0, size - len(header))
    off = (hash_offset(rel) * 4096) % max(1, POOL - body_len)
    return (header + pool[off : off + body_len])[:size]


def hash_offset(rel: str) -> int:
    h = 0
    for ch in rel.encode():
        h = (h * 131 + ch) % 1_000_003
    return h


def ensure_tree(base: Path) -> Tree:
    """Build or repair ``base/tree``; returns its manifest."""
    root = base / "tree"
    sizes, links = _plan()
    manifest = base / "manifest.json"
    pool: bytes | None = None
    fresh = not root.exists()
    expected_dirs = {os.path.dirname(r) for r in sizes} | {os.path.dirname(r) for r, _ in links}
    for d in sorted(expected_dirs):
        (root / d).mkdir(parents=True, exist_ok=True)
    wanted = set(sizes)
    for rel, size in sizes.items():
        p = root / rel
        if not fresh:
            try:
                st = p.lstat()
                if st.st_size == size and os.path.isfile(p) and not os.path.islink(p):
                    continue
            except FileNotFoundError:
                pass
        if pool is None:
            pool = _pool()
        p.write_bytes(content(rel, size, pool))
    for rel, target in links:
        p = root / rel
        if not os.path.islink(p):
            p.symlink_to(target)
    if (root / ADDED_DIR).exists():
        shutil.rmtree(root / ADDED_DIR)
    if not fresh and manifest.exists():
        for rel in json.loads(manifest.read_text()).get("added", []):
            if rel not in wanted:
                try:
                    (root / rel).unlink()
                except FileNotFoundError:
                    pass
    manifest.write_text(json.dumps({"files": len(sizes), "bytes": sum(sizes.values()), "added": []}))
    return Tree(root, sorted(sizes), sizes)


def apply_changes(base: Path, tree: Tree, fraction: float = 0.01) -> dict[str, set[str]]:
    """Modify, delete and add ``fraction`` of the files each; returns absolute paths per change type."""
    n = max(1, int(len(tree.files) * fraction))
    rng = random.Random(SEED + 2)
    chosen = rng.sample(tree.files, 2 * n)
    modified, deleted = chosen[:n], chosen[n:]
    for rel in modified:
        with open(tree.root / rel, "ab") as f:
            f.write(b"tampered\n")
    for rel in deleted:
        (tree.root / rel).unlink()
    added: list[str] = []
    (tree.root / ADDED_DIR).mkdir()
    for k in range(n):
        rel = f"{ADDED_DIR}/new{k}.dat" if k % 2 else f"d{k % TOP:02d}/s{k % MID}/added{k}.dat"
        (tree.root / rel).write_bytes(rng.randbytes(rng.randrange(512, 256 * 1024)))
        added.append(rel)
    manifest = base / "manifest.json"
    data = json.loads(manifest.read_text())
    data["added"] = [r for r in added if not r.startswith(ADDED_DIR + "/")]
    manifest.write_text(json.dumps(data))
    root = str(tree.root)
    return {
        "modified": {f"{root}/{r}" for r in modified},
        "deleted": {f"{root}/{r}" for r in deleted},
        "added": {f"{root}/{r}" for r in added},
    }
