"""Materialise a check's annotated sample (a small file tree) so a test can run the check on it.

A sample::

    expect: passed | failed | not_applicable
    files:                       # host path -> content, or {content, mode, owner, group}
      /etc/ssh/sshd_config: "PermitRootLogin no\\n"
      /etc/shadow: {content: "", mode: "0640", owner: root, group: shadow}
    links: {/etc/systemd/system/multi-user.target.wants/telnet.service: /lib/systemd/system/telnet.service}
    dirs: [/etc/nginx/conf.d]

Processes are files too (``/proc/123/comm``), and so are kernel parameters (``/proc/sys/net/...``).
Owner and group names are resolved through the sample's own ``/etc/passwd`` and ``/etc/group`` when it
has them (else root = 0); setting them needs root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hostward.agent.baseline.host import HostView


def sample_needs_root(sample: dict[str, Any]) -> bool:
    return any(
        isinstance(spec, dict) and ("owner" in spec or "group" in spec)
        for spec in (sample.get("files") or {}).values()
    )


def build_sample_tree(root: Path, sample: dict[str, Any]) -> None:
    """Create the sample's files, directories and links under ``root``."""
    view = HostView(root=root)
    for d in sample.get("dirs") or []:
        view.path(str(d)).mkdir(parents=True, exist_ok=True)
    files = sample.get("files") or {}
    for name, spec in files.items():
        target = view.path(str(name))
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, dict) and "content" not in spec and target.is_dir():
            continue  # attributes of a directory listed under dirs
        content = spec.get("content", "") if isinstance(spec, dict) else spec
        target.write_text("" if content is None else str(content))
    for name, spec in files.items():
        if not isinstance(spec, dict):
            continue
        target = view.path(str(name))
        if "mode" in spec:
            os.chmod(target, int(str(spec["mode"]), 8))
        if "owner" in spec or "group" in spec:
            fresh = HostView(root=root)  # reads the sample's own passwd/group written above
            uid = fresh.uid(str(spec.get("owner", "root")))
            gid = fresh.gid(str(spec.get("group", "root")))
            if uid is None or gid is None:
                raise ValueError(f"sample file {name}: unknown owner or group")
            os.chown(target, uid, gid)
    for name, dest in (sample.get("links") or {}).items():
        link = view.path(str(name))
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(str(dest))
