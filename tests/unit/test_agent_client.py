"""Client error mapping: httpx never leaks; the manager's error envelope becomes the message."""

from __future__ import annotations

import httpx
import pytest

from hostward.agent.errors import AuthRejected, ManagerUnavailable, RequestRejected
from hostward.agent.transport.client import AgentClient, channel_url


def client(handler: httpx.MockTransport) -> AgentClient:
    return AgentClient("https://m.example:10180", verify=False, agent_key="secret", transport=handler)


def test_channel_url() -> None:
    assert channel_url("https://m:1/") == "https://m:1/agent/v1"
    assert channel_url("https://m:1/agent/v1") == "https://m:1/agent/v1"


def test_bearer_key_and_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"commands": []})

    assert client(httpx.MockTransport(handler)).commands(wait=25) == []
    assert seen[0].headers["Authorization"] == "Bearer secret"
    assert seen[0].url.path == "/agent/v1/commands" and seen[0].url.params["wait"] == "25"


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (401, AuthRejected),
        (403, AuthRejected),
        (503, ManagerUnavailable),
        (429, ManagerUnavailable),
        (422, RequestRejected),
        (413, RequestRejected),
    ],
)
def test_status_mapping(status: int, exc: type[Exception]) -> None:
    transport = httpx.MockTransport(
        lambda r: httpx.Response(status, json={"error": {"code": "c", "message": "why"}})
    )
    with pytest.raises(exc) as info:
        client(transport).policy()
    assert "c: why" in str(info.value)


def test_network_errors_are_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ManagerUnavailable, match="refused"):
        client(httpx.MockTransport(handler)).policy()


def test_garbage_response_is_unavailable() -> None:
    with pytest.raises(ManagerUnavailable, match="unexpected response"):
        client(httpx.MockTransport(lambda r: httpx.Response(200, json={"x": 1}))).policy()


def test_post_events_sends_stored_json_verbatim() -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(200, json={"acks": [{"key": "a", "status": "accepted"}]})

    resp = client(httpx.MockTransport(handler)).post_events(['{"key":"a"}', '{"key":"b"}'])
    assert bodies == [b'{"events":[{"key":"a"},{"key":"b"}]}'] and resp.acks[0].key == "a"
