"""Agent channel: the advisories about an agent's packages, for its vulnerability scan.

``POST /agent/v1/vulns/advisories {"packages": [[family, name], ...]}`` answers NDJSON, one
``{"kind": "osv" | "debian", "feed", "doc"}`` line per advisory, read from the database in chunks while
it is sent; 404 ``no_vuln_feed`` when no feed has been imported (the agent then skips the check).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, StringConstraints

from hostward.core.errors import NotFound
from hostward.manager.agentlink import service as agentlink
from hostward.manager.agentlink.routes import AgentKey
from hostward.manager.deps import Ctx
from hostward.manager.vulns import feeds

router = APIRouter(tags=["agent"])

Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class AdvisoryRequest(BaseModel):
    packages: list[tuple[Name, Name]] = Field(max_length=feeds.MAX_PACKAGES_PER_REQUEST)


@router.post("/vulns/advisories")
def advisories(body: AdvisoryRequest, key: AgentKey, ctx: Ctx) -> StreamingResponse:
    now = ctx.clock.now()
    with ctx.uow() as session:
        agentlink.authenticate_agent(session, key, now)
        total = feeds.advisory_count(session)
        if total == 0:
            raise NotFound("no vulnerability feed has been imported on the manager", code="no_vuln_feed")
        ids = feeds.advisory_ids_for(session, body.packages)

    def lines() -> Iterator[bytes]:
        with ctx.sessions() as session:
            yield from feeds.advisory_lines(session, ids)

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"X-Hostward-Advisories": str(total), "X-Hostward-Matched": str(len(ids))},
    )
