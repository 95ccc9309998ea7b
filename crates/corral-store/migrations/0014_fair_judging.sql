-- Fair judging: an org's executions run at most this many at once (the
-- rest wait in line, in the order they came), so one org's flood cannot
-- crowd the machine's CPUs out from under the others.
ALTER TABLE plans ADD COLUMN max_concurrent_executions BIGINT NOT NULL DEFAULT 1;
UPDATE plans SET max_concurrent_executions = 2 WHERE id = 'basic';
UPDATE plans SET max_concurrent_executions = 4 WHERE id = 'premium';
UPDATE plans SET max_concurrent_executions = 8 WHERE id = 'enterprise';

-- The wall-clock limit of a run, apart from its CPU limit (time_limit_ms);
-- NULL for runs recorded before there was one.
ALTER TABLE executions ADD COLUMN wall_limit_ms BIGINT;
