-- Counters of the rate-limiting plugins' `cluster` policy, shared by every data plane and
-- every control-plane replica: one row per Kong counter key (route, service, identifier,
-- window, period), incremented in place, removed once its window has closed.
CREATE TABLE ratelimit_counters (
    key        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    value      INTEGER NOT NULL
);
CREATE INDEX ix_ratelimit_counters_expires_at ON ratelimit_counters (expires_at);
