-- The code library: snippets owned by a user, recorded with the org they
-- were made in. `tags` is the snippet's tags as a JSON array (what is
-- read back); `library_tags` holds one row per tag so the tag filter is an
-- exact, indexed match on both backends (a LIKE over the JSON text would
-- need a recheck after the LIMIT and could give short pages).
-- The plan's `max_snippets` is checked by counting the owner's snippets
-- while holding the owner's `users` row (see `Store::create_snippet`), so
-- snippets removed by a cascade never leave a stale counter behind.
CREATE TABLE library_snippets (
    id           TEXT PRIMARY KEY,
    owner_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id       TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    description  TEXT NOT NULL,
    language     TEXT NOT NULL,
    code         TEXT NOT NULL,
    tags         TEXT NOT NULL,
    is_public    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX library_snippets_owner ON library_snippets (owner_id, id);
CREATE INDEX library_snippets_public ON library_snippets (is_public, id);

CREATE TABLE library_tags (
    snippet_id  TEXT NOT NULL REFERENCES library_snippets (id) ON DELETE CASCADE,
    tag         TEXT NOT NULL,
    PRIMARY KEY (snippet_id, tag)
);
CREATE INDEX library_tags_tag ON library_tags (tag, snippet_id);
