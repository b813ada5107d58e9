"""REST client for the manager's ``/api/v1`` and the stored login (URL + bearer token).

The login lives in ``$HOSTWARD_HOME/credentials.json`` (default ``~/.hostward``), a file readable by its
owner only. ``HOSTWARD_URL`` + ``HOSTWARD_TOKEN`` in the environment override it, which is what scripts
and CI use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from hostward.cli.errors import ApiError, CliError, NotLoggedIn

API_PREFIX = "/api/v1"
CREDENTIALS_NAME = "credentials.json"
PAGE_SIZE = 200


def hostward_home() -> Path:
    """The CLI's own state directory: ``$HOSTWARD_HOME`` or ``~/.hostward``."""
    raw = os.environ.get("HOSTWARD_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".hostward"


def normalize_url(url: str) -> str:
    """``https://host:8443/`` or ``.../api/v1`` -> ``https://host:8443`` (the manager's base URL)."""
    text = url.strip().rstrip("/")
    if text.endswith(API_PREFIX):
        text = text[: -len(API_PREFIX)].rstrip("/")
    if not text.startswith(("http://", "https://")):
        raise CliError(f"manager URL must start with http:// or https://, got {url!r}", exit_code=2)
    return text


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (created that way, never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass
class Credentials:
    """A stored login: where the manager is and the bearer token to use."""

    url: str
    token: str
    username: str = ""
    expires_at: str | None = None
    ca_cert: str | None = None

    @classmethod
    def path(cls) -> Path:
        return hostward_home() / CREDENTIALS_NAME

    @classmethod
    def load(cls) -> Credentials:
        """Environment first (``HOSTWARD_URL`` + ``HOSTWARD_TOKEN``), then the credentials file."""
        env_url, env_token = os.environ.get("HOSTWARD_URL"), os.environ.get("HOSTWARD_TOKEN")
        if env_url and env_token:
            return cls(
                url=normalize_url(env_url), token=env_token, ca_cert=os.environ.get("HOSTWARD_CA_CERT")
            )
        path = cls.path()
        try:
            data = json.loads(path.read_text())
            return cls(
                url=normalize_url(str(data["url"])),
                token=str(data["token"]),
                username=str(data.get("username", "")),
                expires_at=data.get("expires_at"),
                ca_cert=data.get("ca_cert"),
            )
        except FileNotFoundError:
            raise NotLoggedIn("not logged in: run `hostward login --url URL --username USER`") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise NotLoggedIn(f"{path} is unreadable ({exc}): run `hostward login` again") from exc

    def save(self) -> Path:
        path = self.path()
        write_private_file(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def forget(cls) -> bool:
        try:
            cls.path().unlink()
            return True
        except FileNotFoundError:
            return False


def _error_from_response(response: httpx.Response) -> ApiError:
    code, message = f"http_{response.status_code}", response.reason_phrase or "request failed"
    try:
        body = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or message)
    except ValueError:
        text = response.text.strip()
        if text:
            message = text[:200]
    message = " ".join(message.split())
    if response.status_code == 401 and code != "invalid_credentials":
        message = f"{message} (run `hostward login` to sign in again)"
    return ApiError(response.status_code, code, message)


class ApiClient:
    """Synchronous client for ``/api/v1``: JSON in, JSON out, error envelopes raised as ``ApiError``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        ca_cert: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = normalize_url(url)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        verify: Any = ca_cert if ca_cert else True
        self._http = httpx.Client(
            base_url=self.url + API_PREFIX,
            headers=headers,
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    @classmethod
    def from_credentials(cls, credentials: Credentials | None = None) -> ApiClient:
        creds = credentials or Credentials.load()
        return cls(creds.url, creds.token, ca_cert=creds.ca_cert)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        extra: dict[str, Any] = {}
        if files is not None:
            extra.update(files=files, data=data or {})
        else:
            extra["json"] = json
        if timeout is not None:
            extra["timeout"] = timeout
        try:
            response = self._http.request(method, path, params=clean, **extra)
        except httpx.TimeoutException as exc:
            raise CliError(f"the manager at {self.url} did not answer in time ({method} {path})") from exc
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the manager at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(f"the manager answered {method} {path} with something that is not JSON") from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {})

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def upload(
        self, path: str, file: Path, *, field: str = "file", timeout: float = 900.0, **form: str
    ) -> Any:
        """``POST`` a file as ``multipart/form-data`` (large imports get a long timeout)."""
        with open(file, "rb") as fh:
            return self.request("POST", path, files={field: (file.name, fh)}, data=form, timeout=timeout)

    def iter_items(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paged listing (``{items, total}``), page by page."""
        offset = 0
        while True:
            page = self.get(path, offset=offset, limit=PAGE_SIZE, **params)
            items = items_of(page)
            yield from items
            offset += len(items)
            total = page.get("total") if isinstance(page, dict) else None
            if not items or not isinstance(total, int) or offset >= total:
                return

    def list_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.iter_items(path, **params))


def items_of(body: Any) -> list[dict[str, Any]]:
    """The list inside a listing answer (``{items: [...]}``) or the answer itself when it is a list."""
    items = body.get("items", []) if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise CliError("the manager answered a listing with something that is not a list")
    return items


def login(url: str, username: str, password: str, *, ca_cert: str | None = None) -> Credentials:
    """``POST /auth/login`` and return (unsaved) credentials holding the session token."""
    with ApiClient(url, ca_cert=ca_cert) as client:
        body = client.post("/auth/login", {"username": username, "password": password})
    if not isinstance(body, dict) or not body.get("token"):
        raise CliError("the manager's login answer carries no token")
    return Credentials(
        url=client.url,
        token=str(body["token"]),
        username=str((body.get("user") or {}).get("username", username)),
        expires_at=body.get("expires_at"),
        ca_cert=ca_cert,
    )
