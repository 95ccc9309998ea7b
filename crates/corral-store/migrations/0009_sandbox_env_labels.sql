-- A sandbox's base environment and labels, as JSON objects.
ALTER TABLE sandboxes ADD COLUMN env TEXT NOT NULL DEFAULT '{}';
ALTER TABLE sandboxes ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
