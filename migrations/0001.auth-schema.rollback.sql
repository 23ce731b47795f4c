DROP TABLE refresh_tokens;
DROP TABLE agents;
DROP TABLE registration_tokens;
