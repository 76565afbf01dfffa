-- Manual target health commands, one row per (upstream, target): the newest replaces older
-- ones. They flow to data planes through the change log like any entity.
CREATE TABLE target_health (
    id          TEXT COLLATE "C" PRIMARY KEY,
    upstream_id TEXT COLLATE "C" NOT NULL,
    target      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX ix_target_health_upstream_id ON target_health (upstream_id);
CREATE INDEX ix_target_health_target ON target_health (target);
