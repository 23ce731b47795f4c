-- depends: 0016.schedules
-- Facts (docs/api.md, facts, labels and selectors): what an agent reports of its machine,
-- a JSON object of at most 64 KiB and depth 8, replaced whole by each report. Dispatch
-- writes these two columns of auth's agents row (as it writes last_seen_at): the agent's
-- report arrives at dispatch. `where` selectors read them.
ALTER TABLE agents
    ADD COLUMN facts jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN facts_updated_at timestamptz,
    -- An operator asked for fresh facts (auth writes it): the agent's polls say so until a
    -- report newer than the request arrives.
    ADD COLUMN facts_requested_at timestamptz;
