"""The keysets agents trust, in the database (public, signed by the root key)."""

# The newest keyset for an agent that asks, with the agent's status: a revoked agent's token
# reads nothing, as from every agent endpoint.
KEYSET_FOR_AGENT = """
SELECT a.status AS agent_status, k.document
  FROM agents a
  LEFT JOIN LATERAL (SELECT document FROM command_keysets ORDER BY version DESC LIMIT 1) k ON true
 WHERE a.id = $1
"""

# Only above every version there is: an older keyset (a replay) inserts nothing. Two
# uploads racing with the same version: the primary key lets one win.
INSTALL_KEYSET = """
INSERT INTO command_keysets (version, document, expires_at)
SELECT $1, $2, $3
 WHERE NOT EXISTS (SELECT 1 FROM command_keysets WHERE version >= $1)
ON CONFLICT (version) DO NOTHING
RETURNING version
"""
