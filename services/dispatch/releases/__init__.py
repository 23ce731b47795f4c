"""Agent releases: uploaded by admins, kept in PostgreSQL, served to agents (and to the
one-line install) without authentication; their digests go into upgrade commands'
signed payloads (lifecycle/issuing.py)."""
