-- Portable SQL only: it runs unchanged on SQLite and PostgreSQL.
-- Ids are UUIDv7 text, times are Unix milliseconds (BIGINT), JSON is TEXT.

-- One row describing this Corral installation, written at first start.
CREATE TABLE instance (
    id          TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    version     TEXT NOT NULL
);
