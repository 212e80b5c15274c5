-- A role per stage, granted only what that stage touches. The role that owns
-- the catalog (the one `vaultline migrate` and the CLI connect as) keeps
-- every right; it needs CREATEROLE for this migration. The stage roles may
-- log in but have no password: set one (ALTER ROLE vaultline_extractor
-- PASSWORD '…') or grant the role to a login of your own.
--
-- Roles belong to the whole server, so several catalogs on one server share
-- them; each catalog grants its own tables. No stage role writes tenant_keys
-- or sources, and none may create objects (DDL is `vaultline migrate`'s).
DO $$
DECLARE
    stage TEXT;
BEGIN
    FOREACH stage IN ARRAY ARRAY['scheduler', 'extractor', 'packager', 'uploader',
                                 'verifier', 'retention', 'auditor'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vaultline_' || stage) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN', 'vaultline_' || stage);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- Another catalog on this server created it at the same moment.
                NULL;
            END;
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', 'vaultline_' || stage);
        EXECUTE format('GRANT SELECT ON schema_migrations TO %I', 'vaultline_' || stage);
    END LOOP;
    -- Before PostgreSQL 15 everyone may create tables in public.
    BEGIN
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'cannot revoke CREATE on schema public from PUBLIC (not its owner): '
                      'stage roles may still create tables there';
    END;
END
$$;

-- Scheduler: reads schedules and whether a snapshot is in flight, claims slots.
GRANT SELECT, UPDATE ON schedules TO vaultline_scheduler;
GRANT SELECT ON snapshots TO vaultline_scheduler;

-- Extractor: the source and the one credential it opens, the tenant's chunk-id
-- key (not its wrapped identity), which chunks exist; records its snapshot.
GRANT SELECT ON sources, credentials, schedules, chunks TO vaultline_extractor;
GRANT SELECT (tenant, key_id, chunk_key, active) ON tenant_keys TO vaultline_extractor;
GRANT SELECT, INSERT, UPDATE ON snapshots TO vaultline_extractor;
GRANT SELECT, UPDATE (condemned_at) ON packs TO vaultline_extractor;

-- Packager: the recipient it encrypts to, and whether a batch is done.
GRANT SELECT (tenant, key_id, recipient) ON tenant_keys TO vaultline_packager;
GRANT SELECT ON snapshots, snapshot_batches TO vaultline_packager;

-- Uploader: records packs, chunks and batches, and the stored snapshot.
GRANT SELECT (tenant, key_id, recipient) ON tenant_keys TO vaultline_uploader;
GRANT SELECT, UPDATE ON snapshots TO vaultline_uploader;
GRANT SELECT, INSERT ON packs, chunks, snapshot_batches, snapshot_packs TO vaultline_uploader;

-- Verifier: reads what it checks (it holds the KEK for level 2 and drills),
-- finishes snapshots, records hashes and drills.
GRANT SELECT ON tenant_keys, sources, credentials, snapshot_packs, chunks, drills
    TO vaultline_verifier;
GRANT SELECT, UPDATE ON snapshots TO vaultline_verifier;
GRANT SELECT, UPDATE (hashed_at) ON packs TO vaultline_verifier;
GRANT INSERT ON drills TO vaultline_verifier;

-- Retention: applies policies, condemns and deletes packs.
GRANT SELECT ON sources TO vaultline_retention;
GRANT SELECT, UPDATE ON snapshots TO vaultline_retention;
GRANT SELECT, UPDATE, DELETE ON packs TO vaultline_retention;
GRANT SELECT, DELETE ON chunks, snapshot_batches, snapshot_packs TO vaultline_retention;

-- Auditor: the trail, executions, webhook deliveries; marks failed snapshots.
GRANT SELECT, INSERT ON audit_events, webhook_attempts TO vaultline_auditor;
GRANT SELECT, INSERT, UPDATE ON executions, webhook_deliveries TO vaultline_auditor;
GRANT SELECT ON webhooks TO vaultline_auditor;
GRANT SELECT, UPDATE ON snapshots TO vaultline_auditor;

GRANT USAGE ON ALL SEQUENCES IN SCHEMA public
    TO vaultline_verifier, vaultline_auditor, vaultline_uploader;
