"""The statements of agent releases (migrations/0019.agent-releases.sql)."""

# An upload of a version and platform already there is refused, never replaced: agents
# holding a signed upgrade expect the bytes its digest names (DELETE first to replace).
CREATE_RELEASE = """
INSERT INTO agent_releases (version, platform, sha256, size, content, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (version, platform) DO NOTHING
RETURNING version, platform, sha256, size, created_at, created_by
"""

LIST_RELEASES = """
SELECT version, platform, sha256, size, created_at, created_by
  FROM agent_releases
 ORDER BY created_at DESC, version DESC, platform
"""

DELETE_RELEASE = """
DELETE FROM agent_releases WHERE version = $1 AND platform = $2
RETURNING version, platform, sha256, size, created_at, created_by
"""

RELEASE_SIZE = """
SELECT size, sha256 FROM agent_releases WHERE version = $1 AND platform = $2
"""

# One slice of a download: with the column stored EXTERNAL (uncompressed, out of line),
# PostgreSQL reads only the TOAST chunks this slice covers. substring() counts from 1.
RELEASE_SLICE = """
SELECT substring(content FROM $3::int + 1 FOR $4::int)
  FROM agent_releases WHERE version = $1 AND platform = $2
"""

RELEASE_EXISTS = """
SELECT EXISTS (SELECT 1 FROM agent_releases WHERE version = $1)
"""
