"""The SQL every service runs alike: who an operator token or a console session is, the
batched `last_used_at` of tokens, and the audit writer's one statement. Statement by
statement, with why each guard is there (services' own SQL lives in their queries.py)."""

from __future__ import annotations

from services.common.db import OPERATOR_CHANNEL

_OPERATOR = "o.id, o.name, o.role, o.scope, o.disabled_at"

# An operator token: valid while not revoked, not expired and its operator not disabled;
# the token's own id comes along (its last use is recorded). Read through the guard's
# cache, which every revocation or disabling empties (NOTIFY_OPERATOR_CHANGED).
OPERATOR_BY_TOKEN = f"""
SELECT {_OPERATOR}, t.id AS token_id
  FROM operator_tokens t
  JOIN operators o ON o.id = t.operator_id
 WHERE t.token_hash = $1
   AND t.revoked_at IS NULL AND t.expires_at > statement_timestamp()
   AND o.disabled_at IS NULL
"""

# A console session: valid while not expired, its operator not disabled and, when it was
# opened with a token, that token still valid (revoking it ends the session too); opened
# with the bootstrap token, that token still the one this service has ($2: its digest).
OPERATOR_BY_SESSION = f"""
SELECT {_OPERATOR}, s.token_id
  FROM operator_sessions s
  JOIN operators o ON o.id = s.operator_id
  LEFT JOIN operator_tokens t ON t.id = s.token_id
 WHERE s.id_hash = $1
   AND s.expires_at > statement_timestamp()
   AND o.disabled_at IS NULL
   AND (s.token_id IS NULL OR (t.revoked_at IS NULL AND t.expires_at > statement_timestamp()))
   AND (s.bootstrap_hash IS NULL OR s.bootstrap_hash = $2)
"""

# In the transaction of every change that can refuse a credential (a token revoked, a
# session ended, an operator disabled or its role or scope changed): delivered only once it
# commits, to every process of every service, whose cache of operators then forgets all.
NOTIFY_OPERATOR_CHANGED = f"SELECT pg_notify('{OPERATOR_CHANNEL}', $1::text)"

# The built-in bootstrap operator (migration 0009), for the bootstrap token.
BOOTSTRAP_OPERATOR = f"SELECT {_OPERATOR} FROM operators o WHERE o.id = '00000000-0000-0000-0000-000000000000'"

# When tokens were last used, written in one batch per interval (never one write per
# request); sorted ids, so two replicas' batches lock in the same order.
TOUCH_OPERATOR_TOKENS = """
UPDATE operator_tokens t
   SET last_used_at = GREATEST(t.last_used_at, u.used_at)
  FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, used_at)
 WHERE t.id = u.id
"""

# The audit writer's one statement: called inside the transaction of the change it
# records, so no change commits without its event (and a rolled-back change leaves none).
INSERT_AUDIT_EVENT = """
INSERT INTO audit_events (id, actor_type, actor_id, actor_name, action, target_type, target_id,
                          outcome, request_id, source_ip, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""
