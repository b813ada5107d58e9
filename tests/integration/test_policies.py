"""Policy groups: presets, view-only enterprise default, copies, validation, deployment, bundle versions."""

from __future__ import annotations

import pytest

from hostward.core.errors import Conflict, Forbidden, Invalid
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service as quotas
from tests.fakes.servers import enrolled_server


@pytest.fixture
def presets(ctx: ManagerContext) -> ManagerContext:
    with ctx.uow() as s:
        policies.ensure_presets(s)
        policies.ensure_presets(s)  # idempotent
    return ctx


def test_presets_and_view_only_enterprise(presets: ManagerContext) -> None:
    ctx = presets
    with ctx.uow() as s:
        groups = {g.name: (g, n) for g, n in policies.list_groups(s)}
        assert set(groups) == {
            "tenant_linux_basic_default_policy_group",
            "tenant_linux_enterprise_default_policy_group",
            "tenant_linux_premium_default_policy_group",
        }
        ent = groups["tenant_linux_enterprise_default_policy_group"][0]
        assert ent.view_only and not ent.copyable
        assert {p.key for p in ent.policies} >= {"asset_discovery"}
        with pytest.raises(Forbidden):
            policies.update_policy(s, ent.id, "asset_discovery", enabled=False, settings=None, actor="a")
        with pytest.raises(Forbidden):
            policies.copy_group(s, ent.id, "mine", "", actor="a")
        with pytest.raises(Forbidden):
            policies.delete_group(s, ent.id, actor="a")


def test_copy_edit_validate_deploy_and_delete(presets: ManagerContext) -> None:
    ctx = presets
    now = ctx.clock.now()
    with ctx.uow() as s:
        prem = policies.default_group(s, "premium")
        custom = policies.copy_group(s, prem.id, "web servers", "for nginx hosts", actor="a")
        with pytest.raises(Conflict):
            policies.copy_group(s, prem.id, "web servers", "", actor="a")
        with pytest.raises(Invalid, match="accounts_interval_s"):
            policies.update_policy(
                s, custom.id, "asset_discovery", enabled=None, settings={"accounts_interval_s": 1}, actor="a"
            )
        quotas.add_quotas(
            s, "premium", 1, expires_at=None, region=None, now=now, settings=ctx.settings, actor="a"
        )
        quotas.add_quotas(
            s, "enterprise", 1, expires_at=None, region=None, now=now, settings=ctx.settings, actor="a"
        )
        server = enrolled_server(s, now)
        ent_server = enrolled_server(s, now)
        protection.enable_one(s, server.id, "premium", now, ctx.settings, actor="a", trigger_scan=False)
        protection.enable_one(
            s, ent_server.id, "enterprise", now, ctx.settings, actor="a", trigger_scan=False
        )
        v1 = server.policy_version
        policies.apply_group(s, custom.id, [server.id], actor="a")
        assert server.policy_group_id == custom.id
        with pytest.raises(Conflict, match="enterprise"):
            policies.apply_group(s, custom.id, [ent_server.id], actor="a")
        policies.update_policy(
            s, custom.id, "asset_discovery", enabled=True, settings={"accounts_interval_s": 600}, actor="a"
        )
        bundle = policies.bundle_for(s, server)
        assert bundle.policies["asset_discovery"].settings["accounts_interval_s"] == 600
        assert server.policy_version == bundle.version != v1
        assert bundle.protection and bundle.edition == "premium"
        with pytest.raises(Conflict, match="deployed"):
            policies.delete_group(s, custom.id, actor="a")
        protection.disable_one(s, server.id, now, ctx.settings, actor="a")
        assert not policies.bundle_for(s, server).protection
        policies.delete_group(s, custom.id, actor="a")
