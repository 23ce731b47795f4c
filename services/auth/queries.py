"""Every SQL statement of the auth service, one by one, with why each lock and guard is there.

Secrets arrive here only as SHA-256 digests (`bytea`). Times come from
`statement_timestamp()`, never `now()`: inside a transaction `now()` is its start.
"""

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
# the same machine (READ COMMITTED takes a fresh snapshot per statement).
ACTIVE_AGENT_FOR_MACHINE = """
SELECT id, registration_token_id
  FROM agents
 WHERE machine_id = $1 AND status = 'active'
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

# A retried registration (lost response) refreshes what the agent reports about itself.
UPDATE_AGENT_DESCRIPTION = """
UPDATE agents
   SET hostname = $2, os = $3, arch = $4, agent_version = $5, labels = $6
 WHERE id = $1 AND status = 'active'
"""

# A re-registration replaces the agent's credentials: earlier refresh tokens die.
REVOKE_AGENT_REFRESH_TOKENS = """
UPDATE refresh_tokens
   SET revoked_at = statement_timestamp()
 WHERE agent_id = $1 AND revoked_at IS NULL
"""

INSERT_REFRESH_TOKEN = """
INSERT INTO refresh_tokens (id, agent_id, token_hash, expires_at)
VALUES ($1, $2, $3, statement_timestamp() + make_interval(secs => $4))
RETURNING expires_at
"""

# --- renewal (one statement, so validation and the sliding expiry are one transaction) ---

# `found` tells apart "no such credential" (401), "agent revoked" (403) and "wrong
# machine" (403) in one round trip. The UPDATE re-checks revoked_at/expires_at on the
# row itself, so a revocation that commits concurrently can never be renewed past.
# The agent's status is implied: revoking an agent revokes its refresh tokens in the
# same transaction.
RENEW_REFRESH_TOKEN = """
WITH found AS MATERIALIZED (
    SELECT rt.id, a.status AS agent_status, a.machine_id
      FROM refresh_tokens rt
      JOIN agents a ON a.id = rt.agent_id
     WHERE rt.token_hash = $1 AND rt.agent_id = $2
), renewed AS (
    UPDATE refresh_tokens rt
       SET expires_at = statement_timestamp() + make_interval(secs => $4),
           last_used_at = statement_timestamp()
      FROM found
     WHERE rt.id = found.id
       AND found.agent_status = 'active'
       AND found.machine_id = $3
       AND rt.revoked_at IS NULL
       AND rt.expires_at > statement_timestamp()
    RETURNING rt.expires_at
)
SELECT found.agent_status, found.machine_id, renewed.expires_at
  FROM found LEFT JOIN renewed ON true
"""

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
       created_at, last_seen_at, revoked_at"""

LIST_AGENTS = f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY created_at DESC, id DESC"

# Pages (an extension for large fleets): keyset on the agents_created_at index.
_AGENT_PAGE = f"""
SELECT {_AGENT_COLUMNS}
  FROM agents
 WHERE (created_at, id) < ($1, $2) {{filters}}
 ORDER BY created_at DESC, id DESC
 LIMIT $3
"""
LIST_AGENTS_PAGE = _AGENT_PAGE.format(filters="")
LIST_AGENTS_PAGE_BY_STATUS = _AGENT_PAGE.format(filters="AND status = $4")

GET_AGENT = f"SELECT {_AGENT_COLUMNS} FROM agents WHERE id = $1"

# Idempotent, and in one transaction with REVOKE_AGENT_REFRESH_TOKENS: once it commits,
# no refresh token of the agent renews and dispatch answers 403 agent_revoked.
REVOKE_AGENT = """
UPDATE agents
   SET status = 'revoked', revoked_at = COALESCE(revoked_at, statement_timestamp())
 WHERE id = $1
RETURNING id
"""
