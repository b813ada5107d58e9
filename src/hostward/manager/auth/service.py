"""Users, password login with rate limiting, and bearer tokens (API and console session)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, HostwardError, Invalid, NotFound, Unauthorized
from hostward.core.ids import new_secret, sha256_hex
from hostward.manager.audit import service as audit
from hostward.manager.auth.models import ROLES, ApiToken, LoginAttempt, User

_hasher = PasswordHasher()
ROLE_RANK = {"readonly": 0, "operator": 1, "admin": 2}
TOKEN_PREFIX = "hwt_"


class RateLimited(HostwardError):
    code = "rate_limited"
    status = 429


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, with the role that decides what they may change."""

    user_id: str
    username: str
    role: str
    token_id: str

    def can(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def validate_password(password: str) -> None:
    if len(password) < 8:
        raise Invalid("password must have at least 8 characters")


def create_user(session: Session, username: str, password: str, role: str, *, actor: str) -> User:
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}")
    if not username or len(username) > 64 or not username.replace("_", "").replace("-", "").isalnum():
        raise Invalid("username: 1-64 letters, digits, '_' or '-'")
    validate_password(password)
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    audit.record(
        session, actor, "create_user", target_type="user", target_id=user.id, target_name=username, role=role
    )
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def delete_user(session: Session, user_id: str, *, actor: str) -> None:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    admins = session.scalar(select(func.count()).where(User.role == "admin", User.disabled.is_(False))) or 0
    if user.role == "admin" and admins <= 1:
        raise Conflict("cannot delete the last administrator")
    session.delete(user)
    audit.record(
        session, actor, "delete_user", target_type="user", target_id=user_id, target_name=user.username
    )


def login(
    session: Session,
    username: str,
    password: str,
    *,
    client_ip: str,
    now: datetime,
    max_failures: int,
    window_s: int,
    session_hours: int,
) -> tuple[str, ApiToken, User]:
    """Check the password and open a console/API session; too many recent failures -> RateLimited."""
    since = now - timedelta(seconds=window_s)
    failures = (
        session.scalar(
            select(func.count()).where(
                LoginAttempt.username == username, LoginAttempt.success.is_(False), LoginAttempt.at >= since
            )
        )
        or 0
    )
    if failures >= max_failures:
        raise RateLimited(f"too many failed logins for {username!r}; try again later")
    user = session.scalar(select(User).where(User.username == username))
    ok = user is not None and not user.disabled and verify_password(user.password_hash, password)
    session.add(LoginAttempt(username=username[:64], client_ip=client_ip[:64], success=ok, at=now))
    if not ok or user is None:
        session.flush()
        raise Unauthorized("invalid username or password")
    raw, token = _new_token(
        session, user, kind="session", name="login", expires_at=now + timedelta(hours=session_hours)
    )
    audit.record(
        session,
        user.username,
        "login",
        target_type="user",
        target_id=user.id,
        target_name=user.username,
        client_ip=client_ip,
    )
    return raw, token, user


def prune_login_attempts(session: Session, older_than: datetime) -> None:
    session.execute(delete(LoginAttempt).where(LoginAttempt.at < older_than))


def _new_token(
    session: Session, user: User, *, kind: str, name: str, expires_at: datetime | None
) -> tuple[str, ApiToken]:
    raw = TOKEN_PREFIX + new_secret(32)
    token = ApiToken(user_id=user.id, kind=kind, name=name, token_hash=sha256_hex(raw), expires_at=expires_at)
    session.add(token)
    session.flush()
    return raw, token


def create_api_token(
    session: Session, principal: Principal, name: str, *, expires_at: datetime | None
) -> tuple[str, ApiToken]:
    user = session.get(User, principal.user_id)
    if user is None:
        raise NotFound("user not found")
    raw, token = _new_token(session, user, kind="api", name=name[:128], expires_at=expires_at)
    audit.record(
        session,
        principal.username,
        "create_api_token",
        target_type="api_token",
        target_id=token.id,
        target_name=name,
    )
    return raw, token


def list_api_tokens(session: Session, principal: Principal) -> list[ApiToken]:
    stmt = select(ApiToken).where(ApiToken.user_id == principal.user_id, ApiToken.kind == "api")
    return list(session.scalars(stmt.order_by(ApiToken.created_at)))


def revoke_token(session: Session, principal: Principal, token_id: str) -> None:
    token = session.get(ApiToken, token_id)
    if token is None or (token.user_id != principal.user_id and not principal.can("admin")):
        raise NotFound("token not found")
    session.delete(token)
    audit.record(session, principal.username, "revoke_api_token", target_type="api_token", target_id=token_id)


def resolve_token(session: Session, raw: str, *, now: datetime) -> Principal:
    """Bearer token -> Principal; Unauthorized when unknown, expired or the user is disabled."""
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == sha256_hex(raw)))
    if token is None or (token.expires_at is not None and token.expires_at <= now):
        raise Unauthorized("invalid or expired token")
    user = session.get(User, token.user_id)
    if user is None or user.disabled:
        raise Unauthorized("invalid or expired token")
    # Touch at most once a minute: keeps read-only requests from writing on every call.
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        token.last_used_at = now
    return Principal(user_id=user.id, username=user.username, role=user.role, token_id=token.id)


def logout(session: Session, principal: Principal) -> None:
    token = session.get(ApiToken, principal.token_id)
    if token is not None and token.kind == "session":
        session.delete(token)
