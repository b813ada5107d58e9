"""Asset fingerprints collected by the agent and stored by the manager."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class Account(BaseModel):
    name: str = Field(max_length=256)
    uid: int
    gid: int
    home: str = ""
    shell: str = ""
    groups: list[str] = Field(default_factory=list)
    login_allowed: bool = True
    root: bool = False


class ListeningPort(BaseModel):
    protocol: Literal["tcp", "tcp6", "udp", "udp6"]
    address: str
    port: int = Field(ge=0, le=65535)
    pid: int | None = None
    process: str = ""
    exe: str = ""


class ProcessInfo(BaseModel):
    pid: int
    ppid: int = 0
    user: str = ""
    exe: str = ""
    cmdline: str = ""
    started_at: datetime | None = None


class Package(BaseModel):
    name: str
    version: str
    arch: str = ""
    manager: Literal["dpkg", "rpm"]


class AutoStartItem(BaseModel):
    name: str
    type: Literal["service", "cron", "rc_script", "preload"]
    path: str = ""
    user: str = ""
    sha256: str = ""


class KernelModule(BaseModel):
    name: str
    size: int = 0
    used_by: list[str] = Field(default_factory=list)
    path: str = ""


class AssetSnapshot(BaseModel):
    """One asset collection: every category the agent could read, with per-category errors."""

    collected_at: datetime
    accounts: list[Account] = Field(default_factory=list)
    ports: list[ListeningPort] = Field(default_factory=list)
    processes: list[ProcessInfo] = Field(default_factory=list)
    packages: list[Package] = Field(default_factory=list)
    autostart: list[AutoStartItem] = Field(default_factory=list)
    kernel_modules: list[KernelModule] = Field(default_factory=list)
    errors: dict[str, str] = Field(default_factory=dict)
