-- Credentials of the auth plugins (Kong's old-DAO entities, `created_at` in milliseconds).
-- The owner (`consumer_id`, or `credential_id` for oauth2 tokens and codes) and the natural
-- keys are columns: owner lists, cascades and lookups by key use an index, and the unique
-- indexes (`ux_<table>_<column>`) make duplicates a 409 on the column they name. Cascading
-- deletes are done by the control plane, which logs each row it removes.
CREATE TABLE keyauth_credentials (
    id          TEXT COLLATE "C" PRIMARY KEY,
    consumer_id TEXT COLLATE "C" NOT NULL REFERENCES consumers (id),
    "key"       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_keyauth_credentials_key ON keyauth_credentials ("key");
CREATE INDEX ix_keyauth_credentials_consumer_id ON keyauth_credentials (consumer_id);

CREATE TABLE basicauth_credentials (
    id          TEXT COLLATE "C" PRIMARY KEY,
    consumer_id TEXT COLLATE "C" NOT NULL REFERENCES consumers (id),
    username    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_basicauth_credentials_username ON basicauth_credentials (username);
CREATE INDEX ix_basicauth_credentials_consumer_id ON basicauth_credentials (consumer_id);

CREATE TABLE hmacauth_credentials (
    id          TEXT COLLATE "C" PRIMARY KEY,
    consumer_id TEXT COLLATE "C" NOT NULL REFERENCES consumers (id),
    username    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_hmacauth_credentials_username ON hmacauth_credentials (username);
CREATE INDEX ix_hmacauth_credentials_consumer_id ON hmacauth_credentials (consumer_id);

CREATE TABLE jwt_secrets (
    id          TEXT COLLATE "C" PRIMARY KEY,
    consumer_id TEXT COLLATE "C" NOT NULL REFERENCES consumers (id),
    "key"       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_jwt_secrets_key ON jwt_secrets ("key");
CREATE INDEX ix_jwt_secrets_consumer_id ON jwt_secrets (consumer_id);

-- A group appears once per consumer.
CREATE TABLE acls (
    id          TEXT COLLATE "C" PRIMARY KEY,
    consumer_id TEXT COLLATE "C" NOT NULL REFERENCES consumers (id),
    "group"     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_acls_group ON acls (consumer_id, "group");
CREATE INDEX ix_acls_group ON acls ("group");

CREATE TABLE oauth2_credentials (
    id          TEXT COLLATE "C" PRIMARY KEY,
    consumer_id TEXT COLLATE "C" NOT NULL REFERENCES consumers (id),
    client_id   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_oauth2_credentials_client_id ON oauth2_credentials (client_id);
CREATE INDEX ix_oauth2_credentials_consumer_id ON oauth2_credentials (consumer_id);

CREATE TABLE oauth2_tokens (
    id            TEXT COLLATE "C" PRIMARY KEY,
    credential_id TEXT COLLATE "C" NOT NULL REFERENCES oauth2_credentials (id),
    service_id    TEXT COLLATE "C" REFERENCES services (id),
    access_token  TEXT NOT NULL,
    refresh_token TEXT,
    created_at    BIGINT NOT NULL,
    doc           TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_oauth2_tokens_access_token ON oauth2_tokens (access_token);
CREATE UNIQUE INDEX ux_oauth2_tokens_refresh_token ON oauth2_tokens (refresh_token);
CREATE INDEX ix_oauth2_tokens_credential_id ON oauth2_tokens (credential_id);
CREATE INDEX ix_oauth2_tokens_service_id ON oauth2_tokens (service_id);

CREATE TABLE oauth2_authorization_codes (
    id            TEXT COLLATE "C" PRIMARY KEY,
    credential_id TEXT COLLATE "C" NOT NULL REFERENCES oauth2_credentials (id),
    service_id    TEXT COLLATE "C" REFERENCES services (id),
    code          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    doc           TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_oauth2_authorization_codes_code ON oauth2_authorization_codes (code);
CREATE INDEX ix_oauth2_authorization_codes_credential_id ON oauth2_authorization_codes (credential_id);
CREATE INDEX ix_oauth2_authorization_codes_service_id ON oauth2_authorization_codes (service_id);
