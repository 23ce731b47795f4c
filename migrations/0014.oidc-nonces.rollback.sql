DROP TABLE oidc_nonces;
