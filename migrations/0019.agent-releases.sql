-- depends: 0018.operator-labels
-- Agent releases (docs/api.md, agent releases and self-upgrade): one artifact per version
-- and platform, uploaded by an admin and kept here so every dispatch replica serves the
-- same bytes. The digest and size are computed by dispatch at upload, never taken from the
-- uploader; an upgrade command carries them inside its signed payload.
CREATE TABLE agent_releases (
    version     text        NOT NULL,
    platform    text        NOT NULL,
    sha256      text        NOT NULL,
    size        bigint      NOT NULL,
    content     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    created_by  text        NOT NULL,
    PRIMARY KEY (version, platform)
);
-- A zipapp is compressed already: stored out of line and uncompressed, a download's
-- substring(content from … for …) reads only the TOAST chunks of its slice, so serving a
-- 14 MB release to many agents at once never holds one whole copy per download.
ALTER TABLE agent_releases ALTER COLUMN content SET STORAGE EXTERNAL;
