"""Installed software as the vulnerability matcher needs it, below an injectable root.

- dpkg: ``var/lib/dpkg/status`` with each binary package's *source* package and source version, since
  Debian's advisories (DSA/DLA, the security tracker) are keyed by source package.
- rpm: ``rpm -qa`` (via the asset collector) when an rpm database exists.
- Python: ``*.dist-info/METADATA`` and ``*.egg-info`` in site-packages / dist-packages directories.
- npm: ``node_modules/[@scope/]NAME/package.json``.
- Java: ``*.jar`` / ``*.war`` / ``*.ear``, identified by ``META-INF/maven/**/pom.properties`` (one level
  of nested jars for fat jars and wars).

Language packages that dpkg installed (``/usr/lib/python3/dist-packages``, ``/usr/share/java``, ...)
are skipped: they are covered by the distribution's own advisories, which know about its backports;
matching them against upstream advisories is exactly the false-positive flood operators complain of.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hostward.agent.vulns.versions import DEB_FAMILIES, RPM_FAMILIES

DEFAULT_SEARCH_DIRS = (
    "/usr/local",
    "/usr/lib",
    "/usr/share",
    "/opt",
    "/srv",
    "/var/www",
    "/var/lib",
    "/home",
    "/root",
)
MAX_WALK_ENTRIES = 400_000
MAX_DEPTH = 8
MAX_NESTED_JAR = 64 * 1024 * 1024
# Build-tool caches hold downloaded artifacts, not installed software.
_SKIP_DIRS = frozenset(
    {
        ".git",
        "__pycache__",
        ".cache",
        ".m2",
        ".gradle",
        ".ivy2",
        ".npm",
        ".cargo",
        ".rustup",
        "proc",
        "sys",
        "dev",
    }
)
_PEP503 = re.compile(r"[-_.]+")
_OS_FAMILY = {
    "debian": "Debian",
    "ubuntu": "Ubuntu",
    "rhel": "Red Hat",
    "almalinux": "AlmaLinux",
    "rocky": "Rocky Linux",
    "opensuse-leap": "openSUSE",
    "opensuse-tumbleweed": "openSUSE",
    "sles": "SUSE",
    "fedora": "Fedora",
}


@dataclass(frozen=True)
class Distro:
    """From ``/etc/os-release``: ``family`` is the OSV ecosystem name (``Debian``), release its version."""

    id: str
    version_id: str
    codename: str
    family: str

    def release_matches(self, release: str | None) -> bool:
        """Whether an advisory's release qualifier (``12``, ``bookworm``, ``22.04:LTS``,
        ``enterprise_linux:9::appstream``) is this host's release; None means "any release"."""
        if not release:
            return True
        major = self.version_id.split(".")[0]
        parts = [p for p in re.split(r"[:\s]+", release.lower()) if p]
        return any(p in (self.version_id.lower(), self.codename.lower(), major) for p in parts) or (
            bool(self.version_id) and release.startswith(self.version_id)
        )


@dataclass(frozen=True)
class InstalledPackage:
    """One thing to match. ``name``/``version`` are what advisories use (dpkg: source package)."""

    ecosystem: str  # OSV base ecosystem: Debian, Ubuntu, Red Hat, PyPI, npm, Maven, ...
    name: str
    version: str
    manager: str  # dpkg | rpm | pip | npm | jar
    binary: str = ""  # dpkg/rpm binary package name, or the distribution name as installed
    binary_version: str = ""
    location: str = ""

    @property
    def family(self) -> str:
        return self.ecosystem.lower()


def read_distro(root: Path = Path("/")) -> Distro | None:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = (root / rel).read_text(errors="replace")
        except OSError:
            continue
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip().strip("\"'")
        os_id = fields.get("ID", "").lower()
        family = _OS_FAMILY.get(os_id, "")
        if not family:
            like = fields.get("ID_LIKE", "").lower().split()
            family = next((_OS_FAMILY[x] for x in like if x in _OS_FAMILY), os_id.capitalize())
        return Distro(os_id, fields.get("VERSION_ID", ""), fields.get("VERSION_CODENAME", ""), family)
    return None


def parse_dpkg_status(text: str, ecosystem: str = "Debian") -> list[InstalledPackage]:
    """Installed packages with their source package (``Source: openssl (3.0.11-1)`` included)."""
    out: list[InstalledPackage] = []
    fields: dict[str, str] = {}

    def flush() -> None:
        if fields.get("Status", "").split() == ["install", "ok", "installed"] and "Package" in fields:
            binary, version = fields["Package"], fields.get("Version", "")
            source, src_version = binary, version
            if "Source" in fields:
                m = re.match(r"^(\S+)(?:\s+\((\S+)\))?", fields["Source"])
                if m:
                    source = m.group(1)
                    src_version = m.group(2) or version
            out.append(InstalledPackage(ecosystem, source, src_version, "dpkg", binary, version))
        fields.clear()

    for line in text.splitlines():
        if not line.strip():
            flush()
            continue
        if line[0] in " \t":
            continue
        key, sep, value = line.partition(":")
        if sep and key in ("Package", "Status", "Version", "Source"):
            fields[key] = value.strip()
    flush()
    return out


def dpkg_owned(root: Path) -> set[str]:
    """Paths of language-package metadata installed by dpkg (from ``var/lib/dpkg/info/*.list``)."""
    owned: set[str] = set()
    info = root / "var/lib/dpkg/info"
    try:
        lists = [e.path for e in os.scandir(info) if e.name.endswith(".list")]
    except OSError:
        return owned
    for path in lists:
        with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.rstrip("\n")
                if line.endswith((".dist-info", ".egg-info", "package.json", ".jar", ".war")):
                    owned.add(line)
    return owned


def _walk(base: Path, budget: list[int]) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(kind, entry) for site-packages / node_modules directories and Java archives, depth-bounded."""
    stack: list[tuple[str, int]] = [(str(base), 0)]
    while stack:
        directory, depth = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        budget[0] -= len(entries)
        if budget[0] < 0:
            return
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    if e.name in ("site-packages", "dist-packages"):
                        yield "python", e
                    elif e.name == "node_modules":
                        yield "npm", e
                    elif e.name not in _SKIP_DIRS and depth < MAX_DEPTH:
                        stack.append((e.path, depth + 1))
                elif e.name.endswith((".jar", ".war", ".ear")) and e.is_file(follow_symlinks=False):
                    yield "java", e
            except OSError:
                continue


def _python_packages(site: str, root: Path, owned: set[str]) -> Iterator[InstalledPackage]:
    try:
        entries = list(os.scandir(site))
    except OSError:
        return
    for e in entries:
        if not e.name.endswith((".dist-info", ".egg-info")):
            continue
        if "/" + os.path.relpath(e.path, root) in owned:
            continue
        meta = os.path.join(e.path, "METADATA" if e.name.endswith(".dist-info") else "PKG-INFO")
        if e.name.endswith(".egg-info") and e.is_file():
            meta = e.path
        name = version = ""
        with contextlib.suppress(OSError), open(meta, encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh):
                if line.startswith("Name:"):
                    name = line[5:].strip()
                elif line.startswith("Version:"):
                    version = line[8:].strip()
                if (name and version) or i > 60 or not line.strip():
                    break
        if name and version:
            yield InstalledPackage(
                "PyPI", _PEP503.sub("-", name).lower(), version, "pip", name, version, os.path.dirname(e.path)
            )


def _npm_packages(node_modules: str, root: Path, owned: set[str]) -> Iterator[InstalledPackage]:
    try:
        entries = list(os.scandir(node_modules))
    except OSError:
        return
    dirs: list[str] = []
    for e in entries:
        if e.name.startswith("@") and e.is_dir():
            with contextlib.suppress(OSError):
                dirs.extend(s.path for s in os.scandir(e.path) if s.is_dir())
        elif not e.name.startswith(".") and e.is_dir():
            dirs.append(e.path)
    for d in dirs:
        manifest = os.path.join(d, "package.json")
        if "/" + os.path.relpath(manifest, root) in owned:
            continue
        try:
            with open(manifest, encoding="utf-8", errors="replace") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        if (
            isinstance(data, dict)
            and isinstance(data.get("name"), str)
            and isinstance(data.get("version"), str)
        ):
            yield InstalledPackage(
                "npm", data["name"], data["version"], "npm", data["name"], data["version"], d
            )


def _pom_properties(zf: zipfile.ZipFile) -> Iterator[tuple[str, str, str]]:
    for info in zf.infolist():
        if info.filename.startswith("META-INF/maven/") and info.filename.endswith("/pom.properties"):
            props: dict[str, str] = {}
            with contextlib.suppress(OSError, zipfile.BadZipFile, KeyError):
                for line in zf.read(info).decode("utf-8", errors="replace").splitlines():
                    key, sep, value = line.partition("=")
                    if sep and not key.startswith("#"):
                        props[key.strip()] = value.strip()
            if props.get("groupId") and props.get("artifactId") and props.get("version"):
                yield props["groupId"], props["artifactId"], props["version"]


def java_packages(path: str) -> list[InstalledPackage]:
    """Maven coordinates inside a jar/war/ear, including jars nested one level deep."""
    found: list[InstalledPackage] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for g, a, v in _pom_properties(zf):
                found.append(InstalledPackage("Maven", f"{g}:{a}", v, "jar", f"{g}:{a}", v, path))
            for info in zf.infolist():
                if not info.filename.endswith(".jar") or info.file_size > MAX_NESTED_JAR:
                    continue
                with contextlib.suppress(OSError, zipfile.BadZipFile, KeyError, ValueError):
                    inner = zipfile.ZipFile(io.BytesIO(zf.read(info)))
                    where = f"{path}!/{info.filename}"
                    for g, a, v in _pom_properties(inner):
                        found.append(InstalledPackage("Maven", f"{g}:{a}", v, "jar", f"{g}:{a}", v, where))
    except (OSError, zipfile.BadZipFile, ValueError):
        return found
    return found


def language_packages(
    root: Path = Path("/"), search_dirs: tuple[str, ...] = DEFAULT_SEARCH_DIRS
) -> list[InstalledPackage]:
    """Python, npm and Java packages found in the usual places below ``root`` (bounded walk)."""
    owned = dpkg_owned(root)
    budget = [MAX_WALK_ENTRIES]
    seen_dirs: set[str] = set()
    out: list[InstalledPackage] = []
    for d in search_dirs:
        base = root / d.lstrip("/")
        if not base.is_dir():
            continue
        for kind, entry in _walk(base, budget):
            real = os.path.realpath(entry.path)
            if real in seen_dirs:
                continue
            seen_dirs.add(real)
            if kind == "python":
                out.extend(_python_packages(entry.path, root, owned))
            elif kind == "npm":
                out.extend(_npm_packages(entry.path, root, owned))
            elif "/" + os.path.relpath(entry.path, root) not in owned:
                out.extend(java_packages(entry.path))
    return out


def os_packages(root: Path = Path("/"), distro: Distro | None = None) -> list[InstalledPackage]:
    """dpkg and rpm packages, tagged with the distribution's OSV ecosystem name."""
    distro = distro or read_distro(root)
    family = distro.family if distro else "Debian"
    out: list[InstalledPackage] = []
    status = root / "var/lib/dpkg/status"
    if status.exists():
        eco = family if family.lower() in DEB_FAMILIES else "Debian"
        out.extend(parse_dpkg_status(status.read_text(encoding="utf-8", errors="replace"), eco))
    from hostward.agent.collectors.packages import rpm_packages  # collector owns the rpm binary call

    with contextlib.suppress(OSError, RuntimeError, ValueError):
        rpms = rpm_packages(root) or []
        eco = family if family.lower() in RPM_FAMILIES else "Red Hat"
        out.extend(InstalledPackage(eco, p.name, p.version, "rpm", p.name, p.version) for p in rpms)
    return out


def installed_packages(
    root: Path = Path("/"), *, languages: bool = True, search_dirs: tuple[str, ...] = DEFAULT_SEARCH_DIRS
) -> tuple[Distro | None, list[InstalledPackage]]:
    """Everything the matcher can check on this host (or below ``root``)."""
    distro = read_distro(root)
    packages = os_packages(root, distro)
    if languages:
        packages.extend(language_packages(root, search_dirs))
    return distro, packages
