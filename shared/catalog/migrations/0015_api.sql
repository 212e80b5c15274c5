-- The HTTP API (`[api] listen` of `vaultline serve`): bearer tokens, each
-- for one tenant and one scope, stored as the SHA-256 of their secret
-- half (the secret is 32 random bytes: a slow hash adds nothing), and
-- revocable. The API logs in as vaultline_api, which reads what the API
-- shows and nothing it does not.
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    scope         TEXT NOT NULL CHECK (scope IN ('read', 'trigger', 'admin')),
    name          TEXT NOT NULL DEFAULT '',
    secret_sha256 BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ
);
CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vaultline_api') THEN
        BEGIN
            CREATE ROLE vaultline_api LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO vaultline_api;
GRANT SELECT ON schema_migrations TO vaultline_api;
GRANT SELECT (id, tenant, scope, secret_sha256, revoked_at) ON api_tokens TO vaultline_api;
GRANT UPDATE (last_used_at) ON api_tokens TO vaultline_api;
GRANT SELECT (name) ON tenants TO vaultline_api;
GRANT SELECT (tenant, name, kind, drill_every_seconds) ON sources TO vaultline_api;
GRANT SELECT ON snapshots, executions, drills, restores, schedules, snapshot_copies TO vaultline_api;
GRANT SELECT (tenant, size, deleting) ON packs TO vaultline_api;
-- An admin token protects and unprotects its tenant's snapshots.
GRANT UPDATE (protected) ON snapshots TO vaultline_api;
