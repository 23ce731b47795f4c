"""Operators in-process on a real PostgreSQL: the guard's lookup (tokens, sessions, the
bootstrap token; revocation and disabling within its cache's 5 s), sign-in, scopes inside
the operations, and the audit trail (one event per change, in the change's transaction;
append-only in the database)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import psycopg
import pytest

from services.auth import accounts
from services.common import audit
from services.common.operators import CACHE_S, Operator, OperatorAuth, Scope, TokenUse
from services.dispatch.lifecycle import commands, jobs
from tests.db import rows
from tests.db.test_command_operations import ADMIN, CTX, _new

BOOTSTRAP_TOKEN = "bootstrap-" + "x" * 40


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def auth(db, clock):
    return OperatorAuth(db, BOOTSTRAP_TOKEN, TokenUse(db), clock)


def events(sql, action: str | None = None) -> list[tuple]:
    return sql.execute("SELECT action, actor_name, target_id, outcome, details FROM audit_events "
                       "WHERE %s::text IS NULL OR action = %s ORDER BY at, id", (action, action)).fetchall()


async def _operator(db, name="alice", role="operator", scope=None, email=None, password=None):
    return await accounts.create_operator(db, CTX, name, role, scope or {"labels": {}, "command_types": ["*"]},
                                          email, password)


async def _token(db, row) -> str:
    caller = Operator(row["id"], row["name"], row["role"], Scope())
    _, secret = await accounts.create_token(db, CTX, caller, row["id"], 3600, "test")
    return secret


async def test_the_bootstrap_token_is_the_audited_bootstrap_admin_and_nothing_else_passes(auth):
    who = await auth.authenticate(BOOTSTRAP_TOKEN)
    assert (who.name, who.role, who.actor.type) == ("bootstrap", "admin", "bootstrap")
    for wrong in ("", BOOTSTRAP_TOKEN + "x", "flop_" + "a" * 43, "fls_" + "a" * 43, "Bearer"):
        assert await auth.authenticate(wrong) is None


async def test_a_token_works_until_revoked_and_the_refusal_lands_within_the_cache(db, sql, auth, clock):
    alice = await _operator(db)
    secret = await _token(db, alice)
    who = await auth.authenticate(secret)
    assert (who.name, who.role) == ("alice", "operator") and who.token_id is not None
    await accounts.revoke_token(db, CTX, ADMIN, who.token_id)
    clock.now += CACHE_S + 0.01
    assert await auth.authenticate(secret) is None
    assert [e[0] for e in events(sql)] == ["operator.create", "operator_token.create", "operator_token.revoke"]


async def test_disabling_an_operator_ends_its_tokens_and_sessions_at_once(db, sql, auth, clock):
    alice = await _operator(db, password="correct horse battery")
    secret = await _token(db, alice)
    session = await accounts.sign_in_with_password(db, CTX, "alice", "correct horse battery", 3600)
    assert (await auth.authenticate(session.secret)).name == "alice"
    await accounts.update_operator(db, CTX, alice["id"], accounts.Changes(disabled=True))
    clock.now += CACHE_S + 0.01
    assert await auth.authenticate(secret) is None and await auth.authenticate(session.secret) is None
    assert sql.execute("SELECT count(*) FROM operator_sessions").fetchone()[0] == 0
    assert sql.execute("SELECT count(*) FROM operator_tokens WHERE revoked_at IS NULL").fetchone()[0] == 0
    # Enabled again, it does not get its old credentials back.
    await accounts.update_operator(db, CTX, alice["id"], accounts.Changes(disabled=False))
    clock.now += CACHE_S + 0.01
    assert await auth.authenticate(secret) is None


async def test_an_expired_token_is_refused(db, sql, auth):
    secret = await _token(db, await _operator(db))
    sql.execute("UPDATE operator_tokens SET expires_at = now() - interval '1 s'")
    assert await auth.authenticate(secret) is None


async def test_sign_in_by_password_opens_a_session_and_a_wrong_one_is_recorded_as_failed(db, sql, auth):
    await _operator(db, password="correct horse battery")
    with pytest.raises(accounts.SignInRefused):
        await accounts.sign_in_with_password(db, CTX, "alice", "correct horse batterx", 3600)
    with pytest.raises(accounts.SignInRefused):
        await accounts.sign_in_with_password(db, CTX, "nobody", "correct horse battery", 3600)
    session = await accounts.sign_in_with_password(db, CTX, "alice", "correct horse battery", 999_999)
    stored = sql.execute("SELECT method, expires_at - created_at <= interval '12 hours' FROM operator_sessions"
                         ).fetchall()
    assert stored == [("password", True)]  # at most 12 hours, whatever was asked
    assert session.secret.startswith("fls_")
    assert (await auth.authenticate(session.secret)).name == "alice"
    signs = [(e[1], e[3]) for e in events(sql, "console.sign_in")]
    assert signs == [("alice", "failed"), ("nobody", "failed"), ("alice", "ok")]
    # Only a digest of the session id is stored.
    assert sql.execute("SELECT count(*) FROM operator_sessions WHERE position(%s in encode(id_hash, 'escape')) > 0",
                       (session.secret,)).fetchone()[0] == 0


async def test_an_operator_without_a_password_cannot_sign_in_by_password(db):
    await _operator(db)
    with pytest.raises(accounts.SignInRefused):
        await accounts.sign_in_with_password(db, CTX, "alice", "", 3600)


async def test_a_session_opened_with_a_token_ends_with_the_token(db, auth, clock):
    secret = await _token(db, await _operator(db))
    session = await accounts.sign_in_with_token(db, CTX, await auth.authenticate(secret), 3600)
    assert (await auth.authenticate(session.secret)).name == "alice"
    token_id = (await auth.authenticate(secret)).token_id
    await accounts.revoke_token(db, CTX, ADMIN, token_id)
    clock.now += CACHE_S + 0.01
    assert await auth.authenticate(session.secret) is None


async def test_only_an_admin_or_the_operator_itself_manages_its_tokens(db, sql):
    alice, bob = await _operator(db), await _operator(db, "bob")
    as_bob = Operator(bob["id"], "bob", "operator", Scope())
    with pytest.raises(accounts.NotYours):
        await accounts.create_token(db, CTX, as_bob, alice["id"], 3600, "")
    secret_id = (await accounts.create_token(db, CTX, ADMIN, alice["id"], 3600, ""))[0]["id"]
    with pytest.raises(accounts.NotYours):
        await accounts.revoke_token(db, CTX, as_bob, secret_id)
    assert sql.execute("SELECT count(*) FROM operator_tokens WHERE revoked_at IS NULL").fetchone()[0] == 1
    with pytest.raises(accounts.BuiltIn):
        await accounts.update_operator(db, CTX, audit.BOOTSTRAP_ID, accounts.Changes(role="viewer"))


async def test_a_change_that_fails_leaves_no_event(db, sql):
    await _operator(db)
    with pytest.raises(accounts.Taken):
        await _operator(db)  # the same name
    assert [e[0] for e in events(sql)] == ["operator.create"]
    assert sql.execute("SELECT count(*) FROM operators WHERE name = 'alice'").fetchone()[0] == 1


async def test_the_database_refuses_to_rewrite_or_remove_an_event_but_the_pruner(db, sql):
    await _operator(db)
    for statement in ("UPDATE audit_events SET actor_name = 'mallory'", "DELETE FROM audit_events",
                      "TRUNCATE audit_events"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with sql.transaction():
                sql.execute(statement)  # as the owner, even
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("UPDATE audit_events SET actor_name = 'mallory'")  # as the services' role
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with sql.transaction():  # a horizon does not let newer events go
            sql.execute("SET LOCAL fleetline.audit_prune_before = '2000-01-01'")
            sql.execute("DELETE FROM audit_events")
    with sql.transaction():
        sql.execute("SET LOCAL fleetline.audit_prune_before = '2999-01-01'")
        assert sql.execute("DELETE FROM audit_events").rowcount == 1


async def test_the_services_role_cannot_delete_an_event_nor_steer_the_pruners_horizon(db, sql):
    """The role every service connects as, as an attacker holding it would try: a horizon of
    its own choosing, a delete of its own, a retention of its own. Only the owner's function
    prunes, to the horizon `fleetline migrate` wrote."""
    await _operator(db)
    await _operator(db, "bob")
    sql.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
    sql.execute("UPDATE audit_events SET at = now() - interval '400 days' WHERE actor_name = 'bootstrap' "
                "AND target_id IN (SELECT target_id FROM audit_events ORDER BY at LIMIT 1)")
    sql.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.transaction():
            await db.execute("SET LOCAL fleetline.audit_prune_before = '2999-01-01'")
            await db.execute("DELETE FROM audit_events WHERE at > now() - interval '1 hour'")
    for statement in ("UPDATE audit_retention SET days = 0.000001", "DELETE FROM audit_retention",
                      "INSERT INTO audit_retention (singleton, days) VALUES (false, 1)"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute(statement)
    async with db.transaction():  # a setting of its own does not move the function's horizon
        await db.execute("SET LOCAL fleetline.audit_prune_before = '2999-01-01'")
        pruned = await db.fetchrow("SELECT * FROM prune_audit_events(1000, '-infinity')")
    assert pruned["deleted"] == 1  # the one event past 365 days, and not the young one
    assert sql.execute("SELECT count(*) FROM audit_events").fetchone() == (1,)
    sql.execute("UPDATE audit_retention SET days = 1e-8")  # the owner (fleetline migrate) moves it: 0.9 ms
    assert (await db.fetchrow("SELECT * FROM prune_audit_events(1000, '-infinity')"))["deleted"] == 1


async def test_a_scoped_operator_reaches_only_agents_within_its_scope_and_types(db, sql, signer):
    staging, prod = rows.agent(sql, labels={"env": "staging"}), rows.agent(sql, labels={"env": "prod"})
    row = await _operator(db, scope={"labels": {"env": "staging"}, "command_types": ["ping"]})
    carol = Operator(row["id"], "alice", "operator", Scope.of("operator", row["scope"]))
    ctx = audit.Context(carol.actor, "r", "127.0.0.1")
    made, _ = await commands.create(db, _new(staging), signer, carol, ctx)
    assert made["created_by_name"] == "alice"
    with pytest.raises(commands.OutOfScope):
        await commands.create(db, _new(prod), signer, carol, ctx)
    with pytest.raises(commands.OutOfScope):
        await commands.create(db, _new(staging, type="shell", params={"script": "id"}), signer, carol, ctx)
    with pytest.raises(commands.CommandNotFound):  # another scope's command does not exist for it
        await commands.get(db, (await commands.create(db, _new(prod), signer, ADMIN, CTX))[0]["id"], carol.scope)
    assert sql.execute("SELECT count(*) FROM commands WHERE agent_id = %s", (prod,)).fetchone()[0] == 1
    assert [e[1] for e in events(sql, "command.create")] == ["alice", "bootstrap"]


async def test_a_job_targets_the_selectors_matches_within_the_scope_and_the_dry_run_counts_the_same(db, sql, signer):
    for env in ("staging", "staging", "prod"):
        rows.agent(sql, labels={"env": env, "role": "web"})
    row = await _operator(db, scope={"labels": {"env": "staging"}, "command_types": ["*"]})
    carol = Operator(row["id"], "alice", "operator", Scope.of("operator", row["scope"]))
    ctx = audit.Context(carol.actor, "r", "127.0.0.1")
    for selector in ({"labels": {"role": "web"}}, {"all_active": True}):
        assert (await jobs.count_targets(db, selector, carol))[0] == 2
        job, _ = await jobs.create(db, jobs.NewJob(selector, _new(None), {"max_in_flight": None, "max_failures": None},
                                                   None), signer, carol, ctx)
        assert job["target_count"] == 2
    with pytest.raises(jobs.NoTargets):  # asks for prod within a staging scope: nothing
        await jobs.count_targets(db, {"labels": {"env": "prod"}}, carol)
    prod = sql.execute("SELECT id FROM agents WHERE labels->>'env' = 'prod'").fetchone()[0]
    with pytest.raises(commands.OutOfScope):
        await jobs.create(db, jobs.NewJob({"agent_ids": [str(prod)]}, _new(None),
                                          {"max_in_flight": None, "max_failures": None}, None), signer, carol, ctx)
    reached = sql.execute("SELECT DISTINCT a.labels->>'env' FROM commands c JOIN agents a ON a.id = c.agent_id"
                          ).fetchall()
    assert reached == [("staging",)]
    assert len(events(sql, "job.create")) == 2


async def test_token_use_is_written_in_one_batch(db, sql, auth):
    secret = await _token(db, await _operator(db))
    await auth.authenticate(secret)
    assert sql.execute("SELECT last_used_at FROM operator_tokens").fetchone()[0] is None
    await auth.token_use.flush()
    assert sql.execute("SELECT last_used_at IS NOT NULL FROM operator_tokens").fetchone()[0]


def test_scope_of_an_admin_is_everything():
    assert Scope.of("admin", {"labels": {"env": "x"}, "command_types": ["ping"]}).everything
    narrowed = Scope.of("viewer", {"labels": {"env": "x"}, "command_types": ["ping"]})
    assert narrowed.covers({"env": "x", "a": "b"}) and not narrowed.covers({"env": "y"})
    assert narrowed.allows_type("ping") and not narrowed.allows_type("shell")
    assert uuid.UUID(int=0) == audit.BOOTSTRAP_ID


async def test_scope_comes_before_existence_for_idempotency_keys_and_cancels(db, sql, signer):
    """A scoped operator replaying an out-of-scope job's idempotency key learns nothing (its
    GET is 404, so is the replay); one whose types exclude `shell` cannot stop a shell job
    or command, though it sees them."""
    staging = rows.agent(sql, labels={"env": "staging"})
    rows.agent(sql, labels={"env": "prod"})
    row = await _operator(db, scope={"labels": {"env": "staging"}, "command_types": ["ping"]})
    carol = Operator(row["id"], "alice", "operator", Scope.of("operator", row["scope"]))
    ctx = audit.Context(carol.actor, "r", "127.0.0.1")
    request = dict(selector={"labels": {"env": "prod"}}, command=_new(None),
                   rollout={"max_in_flight": None, "max_failures": None}, idempotency_key="nightly")
    theirs, _ = await jobs.create(db, jobs.NewJob(**request), signer, ADMIN, CTX)
    for attempt in (request, {**request, "selector": {"labels": {"env": "staging"}}}):
        with pytest.raises(jobs.JobNotFound):
            await jobs.create_once(db, jobs.NewJob(**attempt), signer, carol, ctx)
    assert sql.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
    mine, created = await jobs.create_once(db, jobs.NewJob(**{**request, "idempotency_key": "mine",
                                                               "selector": {"labels": {"env": "staging"}}}),
                                           signer, carol, ctx)
    again, created_again = await jobs.create_once(db, jobs.NewJob(**{
        **request, "idempotency_key": "mine", "selector": {"labels": {"env": "staging"}}}), signer, carol, ctx)
    assert created and not created_again and again["id"] == mine["id"]
    with pytest.raises(jobs.JobNotFound):
        await jobs.cancel(db, theirs["id"], signer, carol, ctx)
    shell_job, _ = await jobs.create(db, jobs.NewJob(
        selector={"labels": {"env": "staging"}}, command=_new(None, type="shell", params={"script": "id"}),
        rollout={"max_in_flight": None, "max_failures": None}, idempotency_key=None), signer, ADMIN, CTX)
    shell_cmd, _ = await commands.create(db, _new(staging, type="shell", params={"script": "id"}), signer, ADMIN, CTX)
    with pytest.raises(commands.OutOfScope):
        await jobs.cancel(db, shell_job["id"], signer, carol, ctx)
    with pytest.raises(commands.OutOfScope):
        await commands.cancel(db, shell_cmd["id"], signer, carol, ctx)
    assert (await jobs.get(db, shell_job["id"], carol.scope))["status"] == "running"  # it still sees it
    assert (await commands.get(db, shell_cmd["id"], carol.scope))["status"] == "pending"
    assert (await jobs.cancel(db, mine["id"], signer, carol, ctx))["status"] == "cancelled"  # its own type: yes


async def test_a_sign_on_nonce_is_taken_once_and_not_after_it_expires_and_the_pruner_clears_the_rest(db, sql):
    from services.auth.pruner import AuthPruner

    nonce, _ = await accounts.issue_oidc_nonce(db)
    racing = await asyncio.gather(*(accounts.take_oidc_nonce(db, nonce) for _ in range(5)))
    assert sorted(racing) == [False, False, False, False, True]  # two sign-ins with one token: one wins
    assert not await accounts.take_oidc_nonce(db, "never-issued")
    stale, _ = await accounts.issue_oidc_nonce(db)
    sql.execute("UPDATE oidc_nonces SET expires_at = now() - interval '1 s'")
    assert not await accounts.take_oidc_nonce(db, stale)
    assert sql.execute("SELECT count(*) FROM oidc_nonces").fetchone() == (1,)  # kept: only taking removes
    assert (await AuthPruner(db, 3600, retention_days=30).prune())["oidc_nonces"] == 1
    assert sql.execute("SELECT count(*) FROM oidc_nonces").fetchone() == (0,)
    # Only a digest is stored.
    fresh, _ = await accounts.issue_oidc_nonce(db)
    assert sql.execute("SELECT count(*) FROM oidc_nonces WHERE position(%s::bytea in nonce_hash) > 0",
                       (fresh.encode(),)).fetchone() == (0,)


async def test_a_cached_operator_is_forgotten_the_moment_a_change_commits_and_not_cached_while_deaf(
        db, sql, databases, database_url):
    """The guard's cache holds only while the process hears `fleetline_operators`: a token
    revoked elsewhere is refused on the next request, with no clock moved."""
    from fleetline.settings import postgres_url
    from services.common.db import OPERATOR_CHANNEL
    from services.common.notifications import Notifications

    heard = asyncio.Event()
    auth: OperatorAuth | None = None

    def changed(payload: str) -> None:
        auth.changed(payload)
        heard.set()

    listener = Notifications(postgres_url(databases.service_url(database_url)), {OPERATOR_CHANNEL: changed})
    auth = OperatorAuth(db, None, TokenUse(db), listening=lambda: listener.listening)
    await listener.start()
    try:
        while not listener.listening:
            await asyncio.sleep(0.01)
        secret = await _token(db, await _operator(db))
        who = await auth.authenticate(secret)
        sql.execute("UPDATE operator_tokens SET expires_at = now()")  # behind its back: unheard,
        assert await auth.authenticate(secret) == who  # so the cached answer stands
        sql.execute("UPDATE operator_tokens SET expires_at = now() + interval '1 hour'")
        await accounts.revoke_token(db, CTX, ADMIN, who.token_id)  # heard
        await asyncio.wait_for(heard.wait(), 5)
        assert await auth.authenticate(secret) is None
    finally:
        await listener.stop()
    # Deaf (no LISTEN connection): every request looks the credential up.
    other = await _token(db, await _operator(db, "bob"))
    assert (await auth.authenticate(other)).name == "bob"
    sql.execute("UPDATE operator_tokens SET revoked_at = now()")  # no notification heard
    assert await auth.authenticate(other) is None
