-- Rate-limit windows shared by every replica (the `database` limits
-- backend): one row per limited subject and fixed window.
CREATE TABLE rate_windows (
    name          TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    count         BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (name, window_start)
);
CREATE INDEX rate_windows_expiry ON rate_windows (expires_at);

-- Daily plan quotas (API calls with keys, executions, ...): one row per
-- user, metric and UTC day. Kept after the day for usage history.
CREATE TABLE usage_daily (
    subject  TEXT NOT NULL,
    metric   TEXT NOT NULL,
    day      BIGINT NOT NULL,
    count    BIGINT NOT NULL,
    PRIMARY KEY (subject, metric, day)
);
