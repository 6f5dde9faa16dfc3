-- Foundation: accounts, sign-in sessions and the key ring for field encryption.
--
-- Nothing that identifies a person is stored in clear: an account's email is kept
-- encrypted (email_enc) and found through a keyed blind index (email_bidx).

CREATE TABLE accounts (
    id            uuid        PRIMARY KEY,
    role          text        NOT NULL CHECK (role IN ('patient', 'provider', 'admin')),
    -- HMAC-SHA256 of the normalized email under a key derived from the index key:
    -- finds an account by email and keeps emails unique, case-insensitively.
    email_bidx    bytea       NOT NULL UNIQUE,
    -- AES-256-GCM ciphertext of the normalized email (see src/crypto).
    email_enc     bytea       NOT NULL,
    -- argon2id PHC string.
    password_hash text        NOT NULL,
    disabled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One sign-in: the family of refresh tokens that descend from one login.
-- Access tokens name their session (claim `sid`), so revoking a session ends them too.
CREATE TABLE auth_sessions (
    id             uuid        PRIMARY KEY,
    account_id     uuid        NOT NULL REFERENCES accounts (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text        CHECK (revoked_reason IN ('logout', 'token_reuse', 'account_disabled')),
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
CREATE INDEX auth_sessions_live_by_account ON auth_sessions (account_id) WHERE revoked_at IS NULL;

-- Refresh tokens are 256 random bits; only their SHA-256 is stored.
CREATE TABLE refresh_tokens (
    token_hash  bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id  uuid        NOT NULL REFERENCES auth_sessions (id),
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    -- Set when the token is exchanged; presenting it again is reuse (theft).
    rotated_at  timestamptz
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Data-encryption keys, one per version, stored only wrapped by the KEK.
CREATE TABLE data_keys (
    version      integer     PRIMARY KEY CHECK (version > 0),
    wrapped_key  bytea       NOT NULL,
    -- Fingerprint of the KEK that wrapped this key, to name a wrong KEK clearly.
    kek_id       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    retired_at   timestamptz
);

-- The root of the blind-index keys. It never rotates with the data keys (that would
-- change every index); rotating the KEK rewraps it.
CREATE TABLE index_keys (
    id          smallint    PRIMARY KEY CHECK (id = 1),
    wrapped_key bytea       NOT NULL,
    kek_id      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
