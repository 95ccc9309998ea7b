-- Sandbox lifecycle: idle auto-stop, auto-delete after a stop, activity,
-- and whether the sandbox holds a place in its creator's concurrent-sandbox
-- count (`counted`: running, paused and starting ones do; stopped and
-- failed ones do not, but a stopped one keeps its uid range for its files).
ALTER TABLE sandboxes ADD COLUMN auto_stop_minutes BIGINT;
ALTER TABLE sandboxes ADD COLUMN auto_delete_minutes BIGINT;
ALTER TABLE sandboxes ADD COLUMN last_active_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN stopped_at BIGINT;
ALTER TABLE sandboxes ADD COLUMN counted BIGINT NOT NULL DEFAULT 0;
UPDATE sandboxes SET counted = 1 WHERE id_slot IS NOT NULL;
UPDATE sandboxes SET last_active_at = updated_at;
CREATE INDEX sandboxes_state ON sandboxes (state);
