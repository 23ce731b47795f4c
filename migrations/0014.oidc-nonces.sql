-- depends: 0013.audit-retention
-- Single sign-on: the nonces auth issued for the console's authorization requests, each
-- good once and for a few minutes. An ID token opens a session only when it carries one of
-- them, unused: a token from elsewhere (whatever nonce its holder claims) opens nothing, and
-- none opens two sessions. Stored as SHA-256 digests.
CREATE TABLE oidc_nonces (
    nonce_hash bytea PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
-- Auth's pruner removes the expired ones, oldest first.
CREATE INDEX oidc_nonces_expiry ON oidc_nonces (expires_at);
