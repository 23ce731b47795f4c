-- depends: 0017.agent-facts
-- Operator labels (docs/api.md, facts, labels and selectors): set and removed by operators
-- without re-enrolment. `labels` stays the column every selector, scope and policy reads,
-- now the effective set: the agent's own (from registration) overlaid by the operators'.
-- One trigger keeps it so on every write, whoever writes: a writer that gives `labels`
-- alone (as registration always did) gives the agent's labels.
ALTER TABLE agents
    ADD COLUMN agent_labels jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN operator_labels jsonb NOT NULL DEFAULT '{}';
UPDATE agents SET agent_labels = labels;

CREATE FUNCTION agents_effective_labels() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.agent_labels = '{}'::jsonb THEN
        NEW.agent_labels := NEW.labels;
    ELSIF TG_OP = 'UPDATE' AND NEW.labels IS DISTINCT FROM OLD.labels
          AND NEW.agent_labels IS NOT DISTINCT FROM OLD.agent_labels
          AND NEW.operator_labels IS NOT DISTINCT FROM OLD.operator_labels THEN
        NEW.agent_labels := NEW.labels;  -- a writer that sets labels alone sets the agent's
    END IF;
    NEW.labels := NEW.agent_labels || NEW.operator_labels;
    RETURN NEW;
END $$;
CREATE TRIGGER agents_effective_labels BEFORE INSERT OR UPDATE OF labels, agent_labels, operator_labels
    ON agents FOR EACH ROW EXECUTE FUNCTION agents_effective_labels();
