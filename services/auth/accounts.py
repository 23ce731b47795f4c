"""Operators: their accounts, their tokens and their console sessions. Each change is one
transaction with its audit event (services/common/audit.py); refusals are the exceptions
below, answered by api_errors.py. Secrets (tokens, session ids) are shown once and stored
as SHA-256 digests; passwords as Argon2id hashes (argon2-cffi), verified off the event loop.

Sign-in (for the console) opens a session, by name and password, by operator token, or by
an ID token of the organisation's OpenID Connect provider (oidc.py verifies it here, in
auth: the console runs the flow but cannot vouch for anyone)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.auth import queries as q
from services.common import audit
from services.common.audit import BOOTSTRAP_ID
from services.common.db import Db
from services.common.operators import ADMIN, SESSION_PREFIX, TOKEN_PREFIX, Operator, digest

MAX_SESSION_S = 43200  # a console session lasts at most 12 hours

_hasher = PasswordHasher()  # Argon2id, the library's current parameters
# Verified when the name is unknown, so a refusal takes as long either way.
_UNKNOWN = _hasher.hash(secrets.token_urlsafe(16))


# --- what can go wrong ---------------------------------------------------------------------


class AccountError(Exception):
    pass


class NoSuchOperator(AccountError):
    pass


class NoSuchToken(AccountError):
    pass


class Taken(AccountError):
    """A name or an email another operator has."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class BuiltIn(AccountError):
    """The bootstrap operator is changed by its token's setting, not through the API."""


class Disabled(AccountError):
    pass


class NotYours(AccountError):
    """Only an admin or the operator itself may manage an operator's tokens."""


class SignInRefused(AccountError):
    """Wrong name, password, token or identity: the answer never says which."""


# --- passwords -------------------------------------------------------------------------------


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def _password_matches(stored: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(stored or _UNKNOWN, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


# --- operators ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Changes:
    """A PATCH: None leaves a field as it is (email_given says whether email is in it)."""
    role: str | None = None
    scope: dict | None = None
    email: str | None = None
    email_given: bool = False
    password: str | None = None
    disabled: bool | None = None


def _described(changes: Changes) -> dict:
    """What the audit event says of a change: its fields, never the password itself."""
    out: dict[str, object] = {k: v for k, v in (("role", changes.role), ("scope", changes.scope),
                                               ("disabled", changes.disabled)) if v is not None}
    if changes.email_given:
        out["email"] = changes.email
    if changes.password is not None:
        out["password"] = "changed"
    return out


async def create_operator(db: Db, ctx: audit.Context, name: str, role: str, scope: dict, email: str | None,
                          password: str | None):
    password_hash = await hash_password(password) if password else None
    operator_id = uuid.uuid4()
    try:
        async with db.transaction():
            row = await db.fetchrow(q.INSERT_OPERATOR, operator_id, name, role, scope, email, password_hash)
            await audit.record(db, ctx, "operator.create", "operator", operator_id,
                               details={"name": name, "role": role, "scope": scope, "email": email,
                                        "password": "set" if password else None})
    except asyncpg.UniqueViolationError as exc:
        raise Taken("email" if "email" in str(exc) else "name") from None
    return row


async def list_operators(db: Db) -> list:
    return await db.fetch(q.LIST_OPERATORS)


async def get_operator(db: Db, operator_id: uuid.UUID):
    row = await db.fetchrow(q.GET_OPERATOR, operator_id)
    if row is None:
        raise NoSuchOperator()
    return row


async def update_operator(db: Db, ctx: audit.Context, operator_id: uuid.UUID, changes: Changes):
    password_hash = await hash_password(changes.password) if changes.password else None
    try:
        async with db.transaction():
            current = await db.fetchrow(q.LOCK_OPERATOR, operator_id)
            if current is None:
                raise NoSuchOperator()
            if operator_id == BOOTSTRAP_ID:
                raise BuiltIn()
            row = await db.fetchrow(q.UPDATE_OPERATOR, operator_id, changes.role, changes.scope, password_hash,
                                    changes.email, changes.email_given, changes.disabled)
            if changes.disabled:
                await db.execute(q.END_OPERATOR_SESSIONS, operator_id)
                await db.execute(q.REVOKE_OPERATOR_TOKENS, operator_id)
            await audit.record(db, ctx, "operator.update", "operator", operator_id, details=_described(changes))
            await db.execute(q.NOTIFY_OPERATOR_CHANGED, str(operator_id))  # role, scope, disabled: at once
    except asyncpg.UniqueViolationError:
        raise Taken("email") from None
    return row


# --- operator tokens ---------------------------------------------------------------------------


def _may_manage(caller: Operator, operator_id: uuid.UUID) -> None:
    if caller.role != ADMIN and caller.id != operator_id:
        raise NotYours()


async def create_token(db: Db, ctx: audit.Context, caller: Operator, operator_id: uuid.UUID, expires_in_s: int,
                       note: str) -> tuple[dict, str]:
    """The token's row and its secret (shown once)."""
    _may_manage(caller, operator_id)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = uuid.uuid4()
    async with db.transaction():
        operator = await db.fetchrow(q.LOCK_OPERATOR, operator_id)
        if operator is None:
            raise NoSuchOperator()
        if operator_id == BOOTSTRAP_ID:
            raise BuiltIn()
        if operator["disabled_at"] is not None:
            raise Disabled()
        row = await db.fetchrow(q.INSERT_OPERATOR_TOKEN, token_id, operator_id, digest(secret), note, expires_in_s)
        await audit.record(db, ctx, "operator_token.create", "operator_token", token_id,
                           details={"operator_id": str(operator_id), "operator": operator["name"],
                                    "expires_in_s": expires_in_s, "note": note})
    return row, secret


async def list_tokens(db: Db, caller: Operator, operator_id: uuid.UUID) -> list:
    _may_manage(caller, operator_id)
    await get_operator(db, operator_id)
    return await db.fetch(q.LIST_OPERATOR_TOKENS, operator_id)


async def revoke_token(db: Db, ctx: audit.Context, caller: Operator, token_id: uuid.UUID) -> None:
    async with db.transaction():
        token = await db.fetchrow(q.GET_OPERATOR_TOKEN, token_id)
        if token is None:
            raise NoSuchToken()
        _may_manage(caller, token["operator_id"])
        await db.execute(q.REVOKE_OPERATOR_TOKEN, token_id)
        await audit.record(db, ctx, "operator_token.revoke", "operator_token", token_id,
                           details={"operator_id": str(token["operator_id"])})
        await db.execute(q.NOTIFY_OPERATOR_CHANGED, str(token["operator_id"]))


# --- console sessions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    secret: str  # the cookie's value: shown once, stored as a digest
    expires_at: datetime
    operator: Any  # its row


async def _open(db: Db, ctx: audit.Context, operator, method: str, session_s: int,
                token_id: uuid.UUID | None = None, bootstrap_hash: bytes | None = None) -> Session:
    secret = SESSION_PREFIX + secrets.token_urlsafe(32)
    actor = audit.Actor("bootstrap" if operator["id"] == BOOTSTRAP_ID else "operator", operator["id"],
                        operator["name"])
    async with db.transaction():
        expires = await db.fetchval(q.INSERT_SESSION, digest(secret), operator["id"], token_id, method,
                                    min(session_s, MAX_SESSION_S), bootstrap_hash)
        await audit.record(db, audit.Context(actor, ctx.request_id, ctx.source_ip), "console.sign_in",
                           "operator", operator["id"], details={"method": method})
    return Session(secret, expires, operator)


async def _refused(db: Db, ctx: audit.Context, who: str, method: str) -> SignInRefused:
    """A failed sign-in, recorded on its own (there is no change to record it with)."""
    actor = audit.Actor("operator", None, who[:64] or "(unknown)")
    await audit.record(db, audit.Context(actor, ctx.request_id, ctx.source_ip), "console.sign_in",
                       outcome="failed", details={"method": method})
    return SignInRefused()


async def sign_in_with_password(db: Db, ctx: audit.Context, name: str, password: str, session_s: int) -> Session:
    operator = await db.fetchrow(q.OPERATOR_FOR_SIGN_IN, name)
    stored = operator["password_hash"] if operator is not None else None
    if stored is None or not await _password_matches(stored, password):
        raise await _refused(db, ctx, name, "password")
    if _hasher.check_needs_rehash(stored):
        await db.execute(q.REHASH_PASSWORD, operator["id"], await hash_password(password))
    return await _open(db, ctx, operator, "password", session_s)


async def sign_in_with_token(db: Db, ctx: audit.Context, operator: Operator | None, session_s: int) -> Session:
    """`operator`: what the token authenticated as (the guard's lookup), or None. The
    bootstrap token opens a session too (break-glass), which ends when that token changes."""
    if operator is None or (operator.token_id is None and operator.bootstrap_hash is None):
        raise await _refused(db, ctx, "", "token")
    return await _open(db, ctx, await get_operator(db, operator.id), "token", session_s, operator.token_id,
                       operator.bootstrap_hash)


OIDC_NONCE_S = 600  # as long as the console's sign-on flow lasts


async def issue_oidc_nonce(db: Db) -> tuple[str, datetime]:
    """A nonce for one authorization request of the console, good once for OIDC_NONCE_S."""
    nonce = secrets.token_urlsafe(32)
    return nonce, await db.fetchval(q.INSERT_OIDC_NONCE, digest(nonce), OIDC_NONCE_S)


async def take_oidc_nonce(db: Db, nonce: str) -> bool:
    """Whether `nonce` is one auth issued, not yet used nor expired; it is used from now on."""
    return await db.fetchval(q.TAKE_OIDC_NONCE, digest(nonce)) is not None


async def sign_in_with_email(db: Db, ctx: audit.Context, email: str, session_s: int) -> Session:
    """`email`: the verified email of an ID token oidc.py verified."""
    operator = await db.fetchrow(q.OPERATOR_BY_EMAIL, email.lower())
    if operator is None:
        raise await _refused(db, ctx, email, "oidc")
    return await _open(db, ctx, operator, "oidc", session_s)


async def sign_out(db: Db, ctx: audit.Context, credential: str) -> None:
    """Ends the console session `credential` names (a token is left as it is)."""
    if not credential.startswith(SESSION_PREFIX):
        return
    async with db.transaction():
        if await db.fetchval(q.END_SESSION, digest(credential)) is not None:
            await audit.record(db, ctx, "console.sign_out", "operator", ctx.actor.id)
            await db.execute(q.NOTIFY_OPERATOR_CHANGED, str(ctx.actor.id))
