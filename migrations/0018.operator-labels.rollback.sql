DROP TRIGGER agents_effective_labels ON agents;
DROP FUNCTION agents_effective_labels();
UPDATE agents SET labels = agent_labels;
ALTER TABLE agents DROP COLUMN agent_labels, DROP COLUMN operator_labels;
