-- Identity and tenancy. Portable SQL (SQLite and PostgreSQL); NULL limits mean unlimited.
-- Flags are BIGINT 0/1: sqlx's Any driver cannot decode SQLite's BOOLEAN.

ALTER TABLE instance ADD COLUMN token_signing_key TEXT;

CREATE TABLE plans (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    sort_order          BIGINT NOT NULL,
    executions_per_day  BIGINT,
    api_calls_per_day   BIGINT,
    max_time_secs       BIGINT NOT NULL,
    max_memory_mb       BIGINT NOT NULL,
    max_snippets        BIGINT,
    max_api_keys        BIGINT,
    max_sandboxes       BIGINT,
    max_cpus            BIGINT,
    max_disk_mb         BIGINT
);

INSERT INTO plans VALUES ('free',       'Free',       1, 10,   20,   30,  128,  5,    2,    1,    1,    512);
INSERT INTO plans VALUES ('basic',      'Basic',      2, 50,   100,  60,  256,  20,   5,    3,    2,    2048);
INSERT INTO plans VALUES ('premium',    'Premium',    3, 200,  500,  120, 512,  100,  10,   10,   4,    8192);
INSERT INTO plans VALUES ('enterprise', 'Enterprise', 4, NULL, NULL, 300, 1024, NULL, NULL, NULL, NULL, NULL);

CREATE TABLE users (
    id               TEXT PRIMARY KEY,
    email            TEXT NOT NULL UNIQUE,
    username         TEXT NOT NULL UNIQUE,
    password_hash    TEXT NOT NULL,
    role             TEXT NOT NULL,
    plan_id          TEXT NOT NULL REFERENCES plans (id),
    is_active        BIGINT NOT NULL,
    email_verified   BIGINT NOT NULL,
    personal_org_id  TEXT,
    api_key_count    BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- Failed sign-ins per login name (hashed), whether or not such a user
-- exists, so lockout answers the same for unknown and known users.
CREATE TABLE login_throttle (
    login_hash    TEXT PRIMARY KEY,
    failures      BIGINT NOT NULL,
    locked_until  BIGINT,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE orgs (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    is_personal  BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE org_members (
    org_id      TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_user ON org_members (user_id);

-- Only the SHA-256 of a key is stored; `prefix` is the visible start of the key.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id        TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    is_active     BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    usage_count   BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- Rotating refresh tokens: each use replaces the token; a second use of a
-- replaced token revokes its whole family. Only hashes are stored.
CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    family_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    revoked_at  BIGINT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE audit_log (
    id             TEXT PRIMARY KEY,
    at             BIGINT NOT NULL,
    actor_user_id  TEXT,
    org_id         TEXT,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT,
    ip             TEXT,
    user_agent     TEXT,
    outcome        TEXT NOT NULL,
    detail         TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_org ON audit_log (org_id, at);
