"""HTTPS client for the manager's agent channel (``/agent/v1``), pinned to the manager's CA.

httpx errors never leave this module: they become ``ManagerUnavailable`` (retry later),
``AuthRejected`` (credential unknown or revoked) or ``RequestRejected`` (the request is wrong).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from hostward.agent import AGENT_VERSION
from hostward.agent.errors import AuthRejected, ManagerUnavailable, RequestRejected
from hostward.wire import (
    Command,
    CommandResult,
    CommandsResponse,
    EnrollRequest,
    EnrollResponse,
    EventBatchResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    PolicyBundle,
)

AGENT_PREFIX = "/agent/v1"
USER_AGENT = f"hostward-agent/{AGENT_VERSION}"

_R = TypeVar("_R", bound=BaseModel)


def channel_url(manager_url: str) -> str:
    """``https://host:port`` (or one already ending in ``/agent/v1``) -> the channel base URL."""
    url = manager_url.rstrip("/")
    if url.endswith(AGENT_PREFIX):
        return url
    return url + AGENT_PREFIX


def pinned_context(ca_path: Path | None = None, ca_pem: str | None = None) -> ssl.SSLContext:
    """A TLS context that trusts only the manager's CA (not the system store)."""
    ctx = ssl.create_default_context(cafile=str(ca_path) if ca_path else None, cadata=ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class AgentClient:
    """One connection pool to the manager; use one instance per thread."""

    def __init__(
        self,
        manager_url: str,
        *,
        verify: ssl.SSLContext | bool,
        agent_key: str | None = None,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": USER_AGENT}
        if agent_key:
            headers["Authorization"] = f"Bearer {agent_key}"
        self.base_url = channel_url(manager_url)
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing --------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> httpx.Response:
        what = f"{method} {self.base_url}{path}"
        try:
            if timeout is not None:
                kw["timeout"] = httpx.Timeout(timeout, connect=min(self.timeout, 10.0))
            resp = self._http.request(method, path, **kw)
        except httpx.TimeoutException as exc:
            raise ManagerUnavailable(f"{what}: timed out") from exc
        except httpx.HTTPError as exc:
            raise ManagerUnavailable(f"{what}: {exc or type(exc).__name__}") from exc
        _raise_for_status(resp, what)
        return resp

    @staticmethod
    def _parse(resp: httpx.Response, model: type[_R]) -> _R:
        try:
            return model.model_validate_json(resp.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ManagerUnavailable(
                f"{resp.request.method} {resp.request.url}: unexpected response "
                f"({'.'.join(str(p) for p in first['loc'])}: {first['msg']})"
            ) from exc

    # ---- endpoints -------------------------------------------------------------------------------

    def get_ca(self) -> str:
        """The manager's CA certificate as PEM text (checked against the pinned fingerprint by the caller)."""
        return self._request("GET", "/ca").text

    def enroll(self, request: EnrollRequest) -> EnrollResponse:
        resp = self._request("POST", "/enroll", content=request.model_dump_json(), headers=_JSON)
        return self._parse(resp, EnrollResponse)

    def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        resp = self._request("POST", "/heartbeat", content=request.model_dump_json(), headers=_JSON)
        return self._parse(resp, HeartbeatResponse)

    def commands(self, wait: int) -> list[Command]:
        """Long poll: returns as soon as the manager has a command, or empty after about ``wait`` s."""
        resp = self._request(
            "GET", "/commands", params={"wait": wait}, timeout=wait + max(self.timeout, 10.0)
        )
        return self._parse(resp, CommandsResponse).commands

    def post_result(self, command_id: str, result: CommandResult) -> None:
        self._request(
            "POST", f"/commands/{command_id}/result", content=result.model_dump_json(), headers=_JSON
        )

    def post_events(self, bodies: Sequence[str]) -> EventBatchResponse:
        """Send already-serialised events (straight from the outbox, never re-encoded)."""
        payload = '{"events":[' + ",".join(bodies) + "]}"
        resp = self._request("POST", "/events", content=payload.encode(), headers=_JSON)
        return self._parse(resp, EventBatchResponse)

    def policy(self) -> PolicyBundle:
        return self._parse(self._request("GET", "/policy"), PolicyBundle)

    def vuln_advisories(self, packages: Sequence[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        """The advisories about ``packages`` ((family, name) pairs), streamed one object at a time.

        ``RequestRejected`` with status 404 when the manager has no vulnerability feed.
        """
        what = f"POST {self.base_url}/vulns/advisories"
        body = json.dumps({"packages": [list(p) for p in packages]}).encode()
        try:
            with self._http.stream(
                "POST",
                "/vulns/advisories",
                content=body,
                headers=_JSON,
                timeout=httpx.Timeout(max(self.timeout, 60.0), connect=min(self.timeout, 10.0)),
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    _raise_for_status(resp, what)
                for line in resp.iter_lines():
                    if line.strip():
                        item = json.loads(line)
                        if isinstance(item, dict):
                            yield item
        except httpx.TimeoutException as exc:
            raise ManagerUnavailable(f"{what}: timed out") from exc
        except httpx.HTTPError as exc:
            raise ManagerUnavailable(f"{what}: {exc or type(exc).__name__}") from exc
        except ValueError as exc:
            raise ManagerUnavailable(f"{what}: a line of the answer is not JSON") from exc


_JSON = {"Content-Type": "application/json"}


def _raise_for_status(resp: httpx.Response, what: str) -> None:
    """Map an error status to the agent's transport errors (2xx/3xx pass)."""
    status = resp.status_code
    if status < 400:
        return
    reason = _error_message(resp)
    if status in (401, 403):
        raise AuthRejected(f"{what}: {status} {reason}", status=status)
    if status == 429 or status >= 500 or status == 408:
        raise ManagerUnavailable(f"{what}: {status} {reason}", status=status)
    raise RequestRejected(f"{what}: {status} {reason}", status=status)


def _error_message(resp: httpx.Response) -> str:
    """The manager's error envelope ``{"error": {"code", "message"}}`` as one short line."""
    try:
        data = resp.json()
    except ValueError:
        return (resp.text or resp.reason_phrase or "").strip()[:200]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            code = err.get("code", "")
            message = err.get("message", "")
            return f"{code}: {message}" if code else str(message)
        if "detail" in data:
            return str(data["detail"])[:200]
    return str(data)[:200]
