DROP TABLE index_keys;
DROP TABLE data_keys;
DROP TABLE refresh_tokens;
DROP TABLE auth_sessions;
DROP TABLE accounts;
