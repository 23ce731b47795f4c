"""Every SQL statement of the auth service, one by one, with why each lock and guard is there.

Secrets arrive here only as SHA-256 digests (`bytea`). Times come from
`statement_timestamp()`, never `now()`: inside a transaction `now()` is its start.
"""

from services.common import queries as common
from services.common.db import NOTIFY_AGENT as NOTIFY_AGENT_WAKE
from services.common.db import NOTIFY_REVOKED_AGENT

# --- registration (one transaction: lock token -> find machine -> use -> agent -> refresh) ---

# FOR UPDATE on the token row serializes every registration that uses this token: the
# use count and the "does this machine already have an agent" check below happen
# atomically, so N racing machines on a max_uses=k token yield exactly min(N, k) agents.
LOCK_REGISTRATION_TOKEN = """
SELECT id, uses, max_uses
  FROM registration_tokens
 WHERE token_hash = $1
   AND revoked_at IS NULL
   AND expires_at > statement_timestamp()
   FOR UPDATE
"""

# Read after the token lock is held, so it sees an agent committed by a racing retry of
# the same machine (READ COMMITTED takes a fresh snapshot per statement). FOR NO KEY UPDATE
# orders this registration against the agent's first use of its credentials (the mark
# takes the same row lock): a poll or renewal answered before it is seen here (409), and
# one that comes after it finds the retried credentials. No key lock: inserts that
# reference the agent (refresh tokens, commands) are not blocked.
ACTIVE_AGENT_FOR_MACHINE = """
SELECT id, registration_token_id, credentials_used_at
  FROM agents
 WHERE machine_id = $1 AND status = 'active'
   FOR NO KEY UPDATE
"""

# Guarded by `uses < max_uses` (and the table's CHECK) even though the row is locked:
# the count can never pass the limit whatever the caller does.
CONSUME_TOKEN_USE = """
UPDATE registration_tokens
   SET uses = uses + 1
 WHERE id = $1 AND uses < max_uses
RETURNING uses
"""

# The partial unique index agents_one_active_per_machine turns a race between two
# different tokens for one machine into a unique violation: the loser gets 409.
INSERT_AGENT = """
INSERT INTO agents (id, machine_id, registration_token_id, hostname, os, arch,
                    agent_version, labels)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

# A re-registration replaces the agent's credentials: its earlier families and their
# tokens die (in the registration's transaction).
REVOKE_AGENT_REFRESH_TOKENS = """
WITH families AS (
    UPDATE refresh_token_families
       SET revoked_at = COALESCE(revoked_at, statement_timestamp()),
           revoked_reason = COALESCE(revoked_reason, $2)
     WHERE agent_id = $1 AND revoked_at IS NULL
)
UPDATE refresh_tokens
   SET revoked_at = statement_timestamp()
 WHERE agent_id = $1 AND revoked_at IS NULL
"""

# Each registration starts a family; its expiry slides forward at every renewal.
INSERT_FAMILY = """
INSERT INTO refresh_token_families (id, agent_id, expires_at)
VALUES ($1, $2, statement_timestamp() + make_interval(secs => $3))
RETURNING expires_at
"""

INSERT_REFRESH_TOKEN = """
INSERT INTO refresh_tokens (id, agent_id, family_id, token_hash, expires_at)
SELECT $1, f.agent_id, f.id, $3, f.expires_at FROM refresh_token_families f WHERE f.id = $2
RETURNING expires_at
"""

# --- renewal (one transaction: find -> lock the family -> decide -> write) ---

# Which token this is and whose, read without a lock and before the renewal's transaction:
# to find the family to lock, to spend the agent's renewal allowance only on its own tokens,
# and to tell "unknown or another agent's" (401), "agent revoked" (403) and "wrong machine"
# (403) apart before anything is written. A revocation committed after this read revoked
# the family too, which the family's lock then sees.
FIND_REFRESH_TOKEN = """
SELECT rt.id, rt.family_id, rt.agent_id, a.status AS agent_status, a.machine_id
  FROM refresh_tokens rt
  JOIN agents a ON a.id = rt.agent_id
 WHERE rt.token_hash = $1
"""

# A renewal is a use of the agent's credentials (as any agent request to dispatch is):
# after it, registering this machine again is refused (migration 0006). Taken before the
# family's lock, in the order registration takes them (agent, then families), so the two
# never deadlock; rolled back with a refused renewal. IS NULL: later renewals write nothing.
MARK_RENEWAL_USE = """
UPDATE agents SET credentials_used_at = statement_timestamp()
 WHERE id = $1 AND credentials_used_at IS NULL
"""

# FOR UPDATE on the family serializes every renewal of one registration: the consumed and
# successor state read next cannot change under us, so renewals racing with the same token
# leave exactly one live token, and a theft is judged on settled facts.
LOCK_FAMILY = """
SELECT revoked_at, revoked_reason, expires_at > statement_timestamp() AS live
  FROM refresh_token_families
 WHERE id = $1
   FOR UPDATE
"""

# The presented token and its newest successor, read under the family lock.
TOKEN_STATE = """
SELECT t.consumed_at, t.revoked_at, t.superseded_by,
       s.consumed_at AS successor_consumed_at, s.revoked_at AS successor_revoked_at
  FROM refresh_tokens t
  LEFT JOIN refresh_tokens s ON s.id = t.superseded_by
 WHERE t.id = $1
"""

# Rotation: the presented token is consumed (once: a grace renewal keeps the first time)
# and points to its new successor, which expires with the family, slid forward.
ISSUE_SUCCESSOR = """
WITH family AS (
    UPDATE refresh_token_families
       SET expires_at = statement_timestamp() + make_interval(secs => $4)
     WHERE id = $2
    RETURNING agent_id, expires_at
), successor AS (
    INSERT INTO refresh_tokens (id, agent_id, family_id, token_hash, expires_at)
    SELECT $3, family.agent_id, $2, $5, family.expires_at FROM family
    RETURNING id, expires_at
)
UPDATE refresh_tokens t
   SET consumed_at = COALESCE(t.consumed_at, statement_timestamp()),
       superseded_by = successor.id
  FROM successor
 WHERE t.id = $1
RETURNING successor.expires_at
"""

# The grace: a successor never used is replaced by a fresh one (the agent lost it). It
# counts as consumed too: whoever presents it later (the agent, if a thief took the grace;
# the thief, if the agent did) is a reuse, and the family dies.
RETIRE_UNUSED_SUCCESSOR = """
UPDATE refresh_tokens
   SET revoked_at = COALESCE(revoked_at, statement_timestamp()),
       consumed_at = COALESCE(consumed_at, statement_timestamp())
 WHERE id = $1
"""

# Reuse of a consumed token: the whole family dies, the thief's tokens with the agent's.
REVOKE_FAMILY = """
WITH family AS (
    UPDATE refresh_token_families
       SET revoked_at = COALESCE(revoked_at, statement_timestamp()),
           revoked_reason = COALESCE(revoked_reason, $2)
     WHERE id = $1
)
UPDATE refresh_tokens
   SET revoked_at = COALESCE(revoked_at, statement_timestamp())
 WHERE family_id = $1
"""

# --- signed commands -----------------------------------------------------------------------

# The keyset handed to a new agent that pins the root key on first use (dispatch keeps
# this table; auth only reads the newest document).
CURRENT_KEYSET = "SELECT document FROM command_keysets ORDER BY version DESC LIMIT 1"

# --- admin: registration tokens ---

INSERT_REGISTRATION_TOKEN = """
INSERT INTO registration_tokens (id, token_hash, max_uses, note, expires_at)
VALUES ($1, $2, $3, $4, statement_timestamp() + make_interval(secs => $5))
RETURNING id, max_uses, uses, expires_at, note, created_at, revoked_at
"""

LIST_REGISTRATION_TOKENS = """
SELECT id, max_uses, uses, expires_at, note, created_at, revoked_at
  FROM registration_tokens
 ORDER BY created_at DESC, id DESC
"""

# Idempotent: revoking twice keeps the first revocation time.
REVOKE_REGISTRATION_TOKEN = """
UPDATE registration_tokens
   SET revoked_at = COALESCE(revoked_at, statement_timestamp())
 WHERE id = $1
RETURNING id
"""

# --- admin: agents ---

_AGENT_COLUMNS = """id, machine_id, hostname, os, arch, agent_version, labels, status,
       created_at, last_seen_at, revoked_at, facts, facts_updated_at, agent_labels, operator_labels"""

# Every agent list and read is narrowed to the operator's scope: agents carrying every label
# pair of it ($n, '{}' for all: `labels @> '{}'` holds for every agent).
LIST_AGENTS = f"SELECT {_AGENT_COLUMNS} FROM agents WHERE labels @> $1 ORDER BY created_at DESC, id DESC"

# Pages (an extension for large fleets): keyset on the agents_created_at index.
_AGENT_PAGE = f"""
SELECT {_AGENT_COLUMNS}
  FROM agents a
 WHERE (created_at, id) < ($1, $2) {{filters}}
 ORDER BY created_at DESC, id DESC
 LIMIT $3
"""
LIST_AGENTS_PAGE = _AGENT_PAGE.format(filters="AND labels @> $4")
LIST_AGENTS_PAGE_BY_STATUS = _AGENT_PAGE.format(filters="AND labels @> $4 AND status = $5")
# With labels (every pair must match), as a job's label selector chooses: still a walk of
# agents_created_at, filtered as it goes.
LIST_AGENTS_PAGE_BY_LABELS = _AGENT_PAGE.format(
    filters="AND labels @> $4 AND ($5::text IS NULL OR status = $5) AND labels @> $6::jsonb")


def list_agents_page_where(predicate: str) -> str:
    """As LIST_AGENTS_PAGE_BY_LABELS, and a `where` predicate (services/common/where.py:
    every value a parameter, from $7)."""
    return _AGENT_PAGE.format(filters="AND labels @> $4 AND ($5::text IS NULL OR status = $5) "
                                      f"AND labels @> $6::jsonb AND {predicate}")

# In the revocation's transaction, so the notification goes out only once it commits:
# dispatch (every replica) wakes the agent's held poll, answered 403 agent_revoked at once,
# and ends its job commands not delivered yet (a transition of commands: dispatch's).
NOTIFY_REVOKED = NOTIFY_REVOKED_AGENT

GET_AGENT = f"SELECT {_AGENT_COLUMNS} FROM agents WHERE id = $1 AND labels @> $2"

# An operator asks an active agent within its scope ($2) for fresh facts; the agent's held
# poll wakes (NOTIFY_AGENT, after commit) and answers refresh_facts until a report newer than
# this arrives.
REQUEST_FACTS = """
UPDATE agents SET facts_requested_at = statement_timestamp()
 WHERE id = $1 AND labels @> $2 AND status = 'active'
RETURNING id
"""
NOTIFY_AGENT = NOTIFY_AGENT_WAKE

# An operator's labels set ($2) and removed ($3, names), under the row's lock; the
# effective `labels` follow (migration 0018's trigger). Guarded by the scope ($4) as a read
# is: an agent outside it is none of the operator's.
SET_OPERATOR_LABELS = f"""
UPDATE agents
   SET operator_labels = (operator_labels || $2::jsonb) - $3::text[]
 WHERE id = $1 AND labels @> $4
RETURNING {_AGENT_COLUMNS}
"""

# Idempotent, and in one transaction with REVOKE_AGENT_REFRESH_TOKENS: once it commits,
# no refresh token of the agent renews and dispatch answers 403 agent_revoked.
REVOKE_AGENT = """
UPDATE agents
   SET status = 'revoked', revoked_at = COALESCE(revoked_at, statement_timestamp())
 WHERE id = $1
RETURNING id
"""

# --- operators, their tokens and console sessions (accounts.py) ------------------------------

_OPERATOR_COLUMNS = "id, name, role, scope, email, created_at, disabled_at"

# The name and the email are unique (the table's constraints): a racing twin is a 409.
INSERT_OPERATOR = f"""
INSERT INTO operators (id, name, role, scope, email, password_hash)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {_OPERATOR_COLUMNS}
"""

LIST_OPERATORS = f"SELECT {_OPERATOR_COLUMNS} FROM operators ORDER BY name"

GET_OPERATOR = f"SELECT {_OPERATOR_COLUMNS} FROM operators WHERE id = $1"

# Locked for an update: the checks (the bootstrap operator is built in) and the change see
# the same row, and two admins' racing updates apply one after the other.
LOCK_OPERATOR = f"SELECT {_OPERATOR_COLUMNS}, password_hash FROM operators WHERE id = $1 FOR UPDATE"

# Every field given (a NULL keeps what is there, except the email: $6 says whether it is
# set, so null can clear it); disabled: $7 true disables (the first time stays), false
# enables, null keeps.
UPDATE_OPERATOR = f"""
UPDATE operators
   SET role = COALESCE($2, role),
       scope = COALESCE($3, scope),
       password_hash = COALESCE($4, password_hash),
       email = CASE WHEN $6::boolean THEN $5 ELSE email END,
       disabled_at = CASE WHEN $7::boolean IS NULL THEN disabled_at
                          WHEN $7::boolean THEN COALESCE(disabled_at, statement_timestamp())
                          ELSE NULL END
 WHERE id = $1
RETURNING {_OPERATOR_COLUMNS}
"""

# Disabling ends everything the operator holds, in the disabling's transaction: its
# sessions (deleted) and its tokens (revoked); the notification that commits with it
# empties every service's cache of operators.
END_OPERATOR_SESSIONS = "DELETE FROM operator_sessions WHERE operator_id = $1"

# In the transaction of every change that can refuse a credential (an operator updated, a
# token revoked, a session ended): every service forgets the operators it had cached.
NOTIFY_OPERATOR_CHANGED = common.NOTIFY_OPERATOR_CHANGED
REVOKE_OPERATOR_TOKENS = """
UPDATE operator_tokens SET revoked_at = statement_timestamp()
 WHERE operator_id = $1 AND revoked_at IS NULL
"""

_TOKEN_COLUMNS = "id, operator_id, note, created_at, expires_at, revoked_at, last_used_at"

INSERT_OPERATOR_TOKEN = f"""
INSERT INTO operator_tokens (id, operator_id, token_hash, note, expires_at)
VALUES ($1, $2, $3, $4, statement_timestamp() + make_interval(secs => $5))
RETURNING {_TOKEN_COLUMNS}
"""

LIST_OPERATOR_TOKENS = f"""
SELECT {_TOKEN_COLUMNS} FROM operator_tokens WHERE operator_id = $1 ORDER BY created_at DESC, id DESC
"""

GET_OPERATOR_TOKEN = f"SELECT {_TOKEN_COLUMNS} FROM operator_tokens WHERE id = $1"

# Idempotent: a token revoked twice keeps its first revocation time.
REVOKE_OPERATOR_TOKEN = f"""
UPDATE operator_tokens SET revoked_at = COALESCE(revoked_at, statement_timestamp())
 WHERE id = $1
RETURNING {_TOKEN_COLUMNS}
"""

# Sign-in by name: the password's hash, for an enabled operator only.
OPERATOR_FOR_SIGN_IN = f"""
SELECT {_OPERATOR_COLUMNS}, password_hash FROM operators WHERE name = $1 AND disabled_at IS NULL
"""

# Sign-in through the organisation's provider: its verified email names the operator.
OPERATOR_BY_EMAIL = f"""
SELECT {_OPERATOR_COLUMNS} FROM operators WHERE email = $1 AND disabled_at IS NULL
"""

# Single sign-on's nonces (migration 0014): issued for the console's authorization request,
# taken once by the sign-in its ID token answers. The DELETE is the taking: two sign-ins
# racing with one ID token cannot both find it.
INSERT_OIDC_NONCE = """
INSERT INTO oidc_nonces (nonce_hash, expires_at)
VALUES ($1, statement_timestamp() + make_interval(secs => $2))
RETURNING expires_at
"""
TAKE_OIDC_NONCE = """
DELETE FROM oidc_nonces WHERE nonce_hash = $1 AND expires_at > statement_timestamp() RETURNING 1
"""

# Auth's pruner: nonces past their expiry, a batch at a time, oldest first, rows another
# replica's batch holds skipped.
PRUNE_OIDC_NONCES = """
WITH doomed AS MATERIALIZED (
    SELECT nonce_hash FROM oidc_nonces WHERE expires_at < statement_timestamp()
     ORDER BY expires_at LIMIT $1
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM oidc_nonces WHERE nonce_hash IN (SELECT nonce_hash FROM doomed) RETURNING 1
)
SELECT count(*) FROM gone
"""

# Console sessions past their end (signing out deletes its own at once), a batch at a
# time, oldest first.
PRUNE_SESSIONS = """
WITH doomed AS MATERIALIZED (
    SELECT id_hash FROM operator_sessions WHERE expires_at < statement_timestamp() ORDER BY expires_at LIMIT $1
), gone AS (
    DELETE FROM operator_sessions WHERE id_hash IN (SELECT id_hash FROM doomed) RETURNING 1
)
SELECT count(*) FROM gone
"""

# Operator tokens that expired before the horizon (kept that long so the console still
# shows a recently expired one). A session that used one ended long before.
PRUNE_OPERATOR_TOKENS = """
WITH doomed AS MATERIALIZED (
    SELECT t.id FROM operator_tokens t
     WHERE t.expires_at < $1
       AND NOT EXISTS (SELECT 1 FROM operator_sessions s WHERE s.token_id = t.id)
     ORDER BY t.expires_at
     LIMIT $2
), gone AS (
    DELETE FROM operator_tokens WHERE id IN (SELECT id FROM doomed) RETURNING 1
)
SELECT count(*) FROM gone
"""

# A password rehashed at sign-in when its parameters are out of date.
REHASH_PASSWORD = "UPDATE operators SET password_hash = $2 WHERE id = $1"

INSERT_SESSION = """
INSERT INTO operator_sessions (id_hash, operator_id, token_id, method, expires_at, bootstrap_hash)
VALUES ($1, $2, $3, $4, statement_timestamp() + make_interval(secs => $5), $6)
RETURNING expires_at
"""

END_SESSION = "DELETE FROM operator_sessions WHERE id_hash = $1 RETURNING operator_id"

# --- the audit trail's listing (audit_api.py) --------------------------------------------------

# Newest first after the (at, id) cursor; each filter optional. The filters' own indexes
# (by actor, actor name, action, target) serve a filtered listing; the newest-first index
# the plain one.
LIST_AUDIT = """
SELECT id, at, actor_type, actor_id, actor_name, action, target_type, target_id, outcome,
       request_id, source_ip, details
  FROM audit_events
 WHERE (at, id) < ($1, $2)
   AND ($4::uuid IS NULL OR actor_id = $4)
   AND ($5::text IS NULL OR actor_name = $5)
   AND ($6::text IS NULL OR action = $6)
   AND ($7::text IS NULL OR target_id = $7)
   AND ($8::timestamptz IS NULL OR at >= $8)
 ORDER BY at DESC, id DESC
 LIMIT $3
"""
