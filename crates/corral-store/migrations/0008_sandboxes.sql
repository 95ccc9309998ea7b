-- Sandboxes. `id_slot` picks the sandbox's host uid/gid range (unique among
-- sandboxes that hold one; NULL once released). `users.live_sandboxes` is
-- the counter the plan's concurrent-sandbox limit is checked against.
CREATE TABLE sandboxes (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    created_by      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    image           TEXT NOT NULL,
    state           TEXT NOT NULL,
    id_slot         BIGINT UNIQUE,
    memory_mb       BIGINT NOT NULL,
    cpu_millicores  BIGINT NOT NULL,
    pids            BIGINT NOT NULL,
    disk_mb         BIGINT NOT NULL,
    error           TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX sandboxes_org ON sandboxes (org_id, id);

ALTER TABLE users ADD COLUMN live_sandboxes BIGINT NOT NULL DEFAULT 0;
