-- The durable job queue (`corral-queue`), on the store's database.
--
-- States: `pending` (ready once run_at has passed), `running` (leased until
-- locked_until), `completed`, `failed` (kept with last_error until retried or
-- cleared), `waiting` (a chain member behind an unfinished predecessor, or a
-- batch's callback) and `cancelled` (a chain member after a failure).
--
-- `attempt` grows by one on every claim and is the fencing token: a worker
-- may heartbeat, complete, fail or release a job only while the row is
-- `running` under the attempt it claimed. `released` counts claims given
-- back without running (graceful shutdown, rate limits), so the attempts
-- spent are `attempt - released`. `unique_key` dedupes enqueues for as long
-- as the row is kept. Times are Unix ms from the database's clock.
CREATE TABLE queue_jobs (
    id               TEXT PRIMARY KEY,
    queue            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    sensitive        BIGINT NOT NULL DEFAULT 0,
    state            TEXT NOT NULL,
    priority         BIGINT NOT NULL DEFAULT 0,
    run_at           BIGINT NOT NULL,
    attempt          BIGINT NOT NULL DEFAULT 0,
    released         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    backoff_base_ms  BIGINT NOT NULL,
    backoff_max_ms   BIGINT NOT NULL,
    locked_until     BIGINT,
    locked_by        TEXT,
    last_error       TEXT,
    unique_key       TEXT UNIQUE,
    rate_key         TEXT,
    batch_id         TEXT,
    callback_for     TEXT,
    chain_id         TEXT,
    chain_pos        BIGINT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
-- The claim: the best ready job of the named queues.
CREATE INDEX queue_jobs_ready ON queue_jobs (queue, priority DESC, run_at, id)
    WHERE state = 'pending';
-- The lease reaper.
CREATE INDEX queue_jobs_leases ON queue_jobs (locked_until) WHERE state = 'running';
-- Listings by state (failed jobs, stats) and pruning of completed ones.
CREATE INDEX queue_jobs_state ON queue_jobs (state, queue, finished_at);
CREATE INDEX queue_jobs_batch ON queue_jobs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX queue_jobs_chain ON queue_jobs (chain_id, chain_pos) WHERE chain_id IS NOT NULL;

-- Batches: members carry batch_id; the callback job waits (state `waiting`,
-- callback_for = the batch) until every member has finished.
CREATE TABLE queue_batches (
    id                TEXT PRIMARY KEY,
    total             BIGINT NOT NULL,
    succeeded         BIGINT NOT NULL DEFAULT 0,
    failed            BIGINT NOT NULL DEFAULT 0,
    allowed_failures  BIGINT NOT NULL DEFAULT 0,
    callback_job_id   TEXT,
    created_at        BIGINT NOT NULL,
    finished_at       BIGINT
);
