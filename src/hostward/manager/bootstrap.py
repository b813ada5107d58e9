"""``hostward manager init``: data dir, configuration file, database, CA, presets and the admin user."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from hostward.manager.audit import service as audit
from hostward.manager.auth import service as auth
from hostward.manager.auth.models import User
from hostward.manager.context import ManagerContext
from hostward.manager.db import migrate
from hostward.manager.policies import service as policies
from hostward.manager.regions import service as regions
from hostward.manager.settings import CONFIG_NAME, ManagerSettings, load_settings, write_settings_file

ADMIN_PASSWORD_ENV = "HOSTWARD_ADMIN_PASSWORD"


@dataclass
class InitResult:
    settings: ManagerSettings
    created: bool
    admin_password: str | None


def init_manager(
    data_dir: Path,
    *,
    database_url: str | None = None,
    listen: str | None = None,
    agent_listen: str | None = None,
    agent_url: str | None = None,
    admin_password: str | None = None,
) -> InitResult:
    """Idempotent: a second run keeps the CA, the configuration and the users.

    The admin password comes from ``admin_password``, else ``HOSTWARD_ADMIN_PASSWORD``, else it is
    generated and returned once (None when the admin already existed).
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    config_path = data_dir / CONFIG_NAME
    created = not config_path.exists()
    settings = load_settings(
        data_dir, database_url=database_url, listen=listen, agent_listen=agent_listen, agent_url=agent_url
    )
    if created or any(v is not None for v in (database_url, listen, agent_listen, agent_url)):
        write_settings_file(settings)
    migrate.upgrade(settings.effective_database_url)

    from hostward.manager.agentlink import pki

    pki.ensure_pki(settings)

    ctx = ManagerContext.from_settings(settings)
    password: str | None = None
    try:
        with ctx.uow() as session:
            regions.ensure(session, None)
            policies.ensure_presets(session)
            if (session.scalar(select(func.count()).select_from(User)) or 0) == 0:
                password = admin_password or os.environ.get(ADMIN_PASSWORD_ENV) or secrets.token_urlsafe(12)
                auth.create_user(session, "admin", password, "admin", actor="system")
                audit.record(
                    session, "system", "manager_init", target_type="manager", target_name=str(data_dir)
                )
    finally:
        ctx.close()
    return InitResult(settings=settings, created=created, admin_password=password)
