-- Gatehouse schema, Postgres. Ids are text in the "C" collation so that keyset pagination
-- orders them bytewise, the same on both backends.
CREATE TABLE revision (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    head BIGINT NOT NULL
);
INSERT INTO revision (id, head) VALUES (1, 0);

CREATE TABLE cluster (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE changes (
    revision   BIGINT  NOT NULL,
    seq        INTEGER NOT NULL,
    entity     TEXT    NOT NULL,
    entity_id  TEXT    NOT NULL,
    op         TEXT    NOT NULL,
    doc        TEXT,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (revision, seq)
);

CREATE TABLE services (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT,
    created_at BIGINT NOT NULL,
    doc        TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_services_name ON services (name);

CREATE TABLE routes (
    id         TEXT COLLATE "C" PRIMARY KEY,
    service_id TEXT COLLATE "C" NOT NULL REFERENCES services (id),
    created_at BIGINT NOT NULL,
    doc        TEXT NOT NULL
);
CREATE INDEX ix_routes_service_id ON routes (service_id);

CREATE TABLE consumers (
    id         TEXT COLLATE "C" PRIMARY KEY,
    username   TEXT,
    custom_id  TEXT,
    created_at BIGINT NOT NULL,
    doc        TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_consumers_username ON consumers (username);
CREATE UNIQUE INDEX ux_consumers_custom_id ON consumers (custom_id);

CREATE TABLE certificates (
    id         TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL,
    doc        TEXT NOT NULL
);

CREATE TABLE snis (
    id             TEXT COLLATE "C" PRIMARY KEY,
    name           TEXT NOT NULL,
    certificate_id TEXT COLLATE "C" NOT NULL REFERENCES certificates (id),
    created_at     BIGINT NOT NULL,
    doc            TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_snis_name ON snis (name);
CREATE INDEX ix_snis_certificate_id ON snis (certificate_id);

CREATE TABLE plugins (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    service_id  TEXT COLLATE "C" REFERENCES services (id),
    route_id    TEXT COLLATE "C" REFERENCES routes (id),
    consumer_id TEXT COLLATE "C" REFERENCES consumers (id),
    created_at  BIGINT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_plugins_name ON plugins
    (name, COALESCE(service_id, ''), COALESCE(route_id, ''), COALESCE(consumer_id, ''));
CREATE INDEX ix_plugins_service_id ON plugins (service_id);
CREATE INDEX ix_plugins_route_id ON plugins (route_id);
CREATE INDEX ix_plugins_consumer_id ON plugins (consumer_id);

CREATE TABLE upstreams (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    doc        TEXT NOT NULL
);
CREATE UNIQUE INDEX ux_upstreams_name ON upstreams (name);

CREATE TABLE targets (
    id          TEXT COLLATE "C" PRIMARY KEY,
    upstream_id TEXT COLLATE "C" NOT NULL REFERENCES upstreams (id),
    target      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX ix_targets_upstream_id ON targets (upstream_id);
CREATE INDEX ix_targets_target ON targets (target);
