"""Security Operations -> Policies: groups, each policy's switch and settings, copy, delete, apply."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from hostward.core.errors import Invalid, NotFound
from hostward.manager.console.settings_form import fields_for, parse_form
from hostward.manager.console.web import (
    PREFIX,
    FormOperator,
    Next,
    User,
    ctx_of,
    current_region,
    redirect,
    render,
    safe_next,
)
from hostward.manager.policies import service as policies
from hostward.manager.policies.registry import POLICY_SPECS
from hostward.manager.servers import service as servers

router = APIRouter()
APPLY_LIST_LIMIT = 200


@router.get("/policies")
def policies_page(request: Request, user: User) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        groups = policies.list_groups(session)
        return render(
            request, session, user, "policies.html", active="policies", title="Policies", groups=groups
        )


@router.get("/policies/{group_id}")
def group_page(request: Request, group_id: str, user: User) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    with ctx.uow() as session:
        group = policies.get_group(session, group_id)
        rows = []
        for p in group.policies:
            spec = POLICY_SPECS.get(p.key)
            schema = spec.settings_model.model_json_schema() if spec else {}
            rows.append((p, spec, fields_for(schema, p.settings)))
        editions = [e for e, g in policies.EDITION_GROUP.items() if g == group.edition]
        candidates = []
        for edition in editions:
            found, _ = servers.list_servers(session, region=region, edition=edition, limit=APPLY_LIST_LIMIT)
            candidates.extend(found)
        return render(
            request,
            session,
            user,
            "policy_group.html",
            active="policies",
            title=group.name,
            group=group,
            rows=rows,
            hosts=policies.host_count(session, group.id),
            candidates=sorted(candidates, key=lambda s: s.name),
            editions=editions,
        )


def _group_url(group_id: str) -> str:
    return f"{PREFIX}/policies/{group_id}"


@router.post("/policies/{group_id}/policies/{key}")
async def update_policy(request: Request, group_id: str, key: str, user: FormOperator) -> Response:
    # Field names depend on the policy's schema, so the form is read as a whole (async), and the database
    # work runs in the thread pool like every other route.
    form = await request.form()
    spec = POLICY_SPECS.get(key)
    if spec is None:
        raise NotFound(f"unknown policy {key!r}")
    fields = fields_for(spec.settings_model.model_json_schema(), {})
    settings = parse_form(fields, form)
    enabled = form.get("enabled") is not None
    next_url = form.get("next")

    def work() -> None:
        ctx = ctx_of(request)
        with ctx.uow() as session:
            policies.update_policy(
                session, group_id, key, enabled=enabled, settings=settings, actor=user.username
            )

    await run_in_threadpool(work)
    return redirect(
        safe_next(next_url if isinstance(next_url, str) else None, _group_url(group_id)),
        ("ok", f"Policy {spec.title} saved; agents receive it within a minute."),
    )


@router.post("/policies/{group_id}/copy")
def copy_group(
    request: Request,
    group_id: str,
    user: FormOperator,
    name: Annotated[str, Form(max_length=128)] = "",
    description: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        group = policies.copy_group(session, group_id, name, description, actor=user.username)
        new_id = group.id
    return redirect(_group_url(new_id), ("ok", f"Policy group {name.strip()} created."))


@router.post("/policies/{group_id}/delete")
def delete_group(request: Request, group_id: str, user: FormOperator) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        name = policies.get_group(session, group_id).name
        policies.delete_group(session, group_id, actor=user.username)
    return redirect(PREFIX + "/policies", ("ok", f"Policy group {name} deleted."))


@router.post("/policies/{group_id}/apply")
def apply_group(
    request: Request,
    group_id: str,
    user: FormOperator,
    server_ids: Annotated[list[str], Form(max_length=10000)] = [],  # noqa: B006
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    ids = list(dict.fromkeys(i for i in server_ids if i))
    if not ids:
        raise Invalid("select at least one server")
    with ctx.uow() as session:
        applied = policies.apply_group(session, group_id, ids, actor=user.username)
        names = ", ".join(s.name for s in applied[:20])
    return redirect(
        safe_next(next, _group_url(group_id)),
        ("ok", f"Policy group deployed to {len(applied)} server(s): {names}."),
    )
