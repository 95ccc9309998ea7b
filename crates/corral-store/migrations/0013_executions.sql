-- Executions: one program run to a verdict (the judge). Source and input
-- are kept with the result, so history shows what ran.
CREATE TABLE executions (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    batch_id TEXT,
    language TEXT NOT NULL,
    status TEXT NOT NULL,
    code TEXT NOT NULL,
    stdin TEXT NOT NULL,
    files TEXT NOT NULL,
    expected_output TEXT,
    time_limit_ms BIGINT NOT NULL,
    memory_limit_mb BIGINT NOT NULL,
    output_limit_kb BIGINT NOT NULL,
    callback_url TEXT,
    exit_code BIGINT,
    signal BIGINT,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    compile_output TEXT NOT NULL DEFAULT '',
    time_ms BIGINT,
    wall_ms BIGINT,
    memory_kb BIGINT,
    error TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX executions_org ON executions (org_id, id);
CREATE INDEX executions_batch ON executions (batch_id);
