-- Invitations to an organization. Only the SHA-256 of the token is stored.
CREATE TABLE invitations (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    role         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    invited_by   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at   BIGINT NOT NULL,
    accepted_at  BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX invitations_org ON invitations (org_id);
