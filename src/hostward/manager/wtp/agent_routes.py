"""Agent channel: the manager's copy of a server's WTP backup (optional, ``remote_backup`` in its config).

``PUT /agent/v1/wtp/blobs/{sha256}`` (raw body, stored only if it hashes to ``sha256``),
``POST /agent/v1/wtp/manifest {files:[{path, sha256, mode, uid, gid}]}`` → ``{files, missing}``,
``GET /agent/v1/wtp/blobs/{sha256}`` (only the calling server's blobs). Authenticated with the agent key
like every agent route; the server id comes from the credential.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from hostward.core.errors import Conflict
from hostward.manager.agentlink import service as agentlink
from hostward.manager.agentlink.routes import AgentKey
from hostward.manager.context import ManagerContext
from hostward.manager.deps import Ctx
from hostward.manager.wtp.models import WtpServer
from hostward.manager.wtp.remote import RemoteBackup, check_sha
from hostward.manager.wtp.schemas import ManifestIn, ManifestOut

router = APIRouter(tags=["agent"])


def _store_for(ctx: ManagerContext, key: str) -> RemoteBackup:
    """Authenticate the agent; its server must have remote backup switched on."""
    now = ctx.clock.now()
    with ctx.uow() as session:
        server = agentlink.authenticate_agent(session, key, now)
        row = session.get(WtpServer, server.id)
        if row is None or not row.config.get("remote_backup"):
            raise Conflict(
                f"remote backup is not enabled for server {server.name}", code="wtp_remote_backup_off"
            )
        return RemoteBackup(ctx.settings.data_dir, server.id)


@router.put("/wtp/blobs/{sha256}")
async def put_blob(sha256: str, request: Request, key: AgentKey, ctx: Ctx) -> dict[str, object]:
    check_sha(sha256)
    store = await run_in_threadpool(_store_for, ctx, key)
    body = await request.body()  # bounded by the agent app's body size limit
    stored = await run_in_threadpool(store.put, sha256, body)
    return {"sha256": sha256, "stored": stored, "bytes": len(body)}


@router.post("/wtp/manifest", response_model=ManifestOut)
def post_manifest(body: ManifestIn, key: AgentKey, ctx: Ctx) -> ManifestOut:
    store = _store_for(ctx, key)
    missing = store.save_manifest([f.model_dump() for f in body.files])
    return ManifestOut(files=len(body.files), missing=missing)


@router.get("/wtp/blobs/{sha256}", response_class=FileResponse)
def get_blob(sha256: str, key: AgentKey, ctx: Ctx) -> FileResponse:
    check_sha(sha256)
    store = _store_for(ctx, key)
    return FileResponse(store.read(sha256), media_type="application/octet-stream")
