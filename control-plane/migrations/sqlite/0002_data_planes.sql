-- Data planes known to the cluster, as the sync servers of every control plane see them.
CREATE TABLE data_planes (
    id              TEXT PRIMARY KEY,
    hostname        TEXT NOT NULL,
    ip              TEXT NOT NULL,
    version         TEXT NOT NULL,
    last_seen       INTEGER NOT NULL,
    config_revision INTEGER NOT NULL,
    sync_status     TEXT NOT NULL,
    control_plane   TEXT NOT NULL,
    doc             TEXT NOT NULL
);
