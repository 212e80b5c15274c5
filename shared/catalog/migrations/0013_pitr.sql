-- PostgreSQL point-in-time recovery: the base backups of physical sources
-- and the WAL files archive_command hands to `vaultline wal-push`.

-- A physical snapshot's place in the WAL, from pg_basebackup: recovery
-- starts at start_lsn and is consistent from end_lsn on. next_xid is the
-- first transaction id not yet handed out once the backup ended, so a
-- recovery target xid at or past it certainly commits after the base.
CREATE TABLE base_backups (
    tenant        TEXT NOT NULL,
    snapshot      TEXT NOT NULL,
    source        TEXT NOT NULL,
    timeline      INTEGER NOT NULL,
    start_lsn     BIGINT NOT NULL,
    end_lsn       BIGINT NOT NULL,
    segment_size  BIGINT NOT NULL,
    next_xid      BIGINT NOT NULL,
    server_version INTEGER NOT NULL,
    finished_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, snapshot),
    FOREIGN KEY (tenant, snapshot) REFERENCES snapshots(tenant, id) ON DELETE CASCADE
);
CREATE INDEX base_backups_by_source ON base_backups (tenant, source, finished_at);

-- One archived WAL file (segment, .partial, .history or .backup) of a
-- source. A name is recorded once and never replaced: a second push of
-- the same name must bring the same bytes (plain_sha256).
CREATE TABLE wal_files (
    tenant        TEXT NOT NULL,
    source        TEXT NOT NULL,
    name          TEXT NOT NULL,
    timeline      INTEGER NOT NULL,
    -- Counted from the start of the WAL; NULL for a .history file.
    segment       BIGINT,
    plain_size    BIGINT NOT NULL,
    plain_sha256  BYTEA NOT NULL,
    object        TEXT NOT NULL,
    stored_size   BIGINT NOT NULL,
    stored_sha256 BYTEA NOT NULL,
    key_id        TEXT NOT NULL,
    -- When PostgreSQL finished writing it (the file's mtime).
    closed_at     TIMESTAMPTZ NOT NULL,
    stored_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, source, name),
    FOREIGN KEY (tenant, source) REFERENCES sources(tenant, name)
);
CREATE INDEX wal_files_by_segment ON wal_files (tenant, source, timeline, segment);

-- The archiver: the login `vaultline wal-push` uses on the database host.
-- It reads the tenant's public keys and whether the source exists, and
-- records the files it stored. Nothing else: no snapshot, no credential,
-- no wrapped identity, no chunk key.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vaultline_archiver') THEN
        BEGIN
            CREATE ROLE vaultline_archiver LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO vaultline_archiver;
GRANT SELECT ON schema_migrations TO vaultline_archiver;
GRANT SELECT (tenant, key_id, recipient, active) ON tenant_keys TO vaultline_archiver;
GRANT SELECT (tenant, name, kind, config) ON sources TO vaultline_archiver;
GRANT SELECT, INSERT ON wal_files TO vaultline_archiver;

-- The extractor records where a base backup sits in the WAL (again, on a
-- retried extraction of the same snapshot).
GRANT SELECT, INSERT, UPDATE ON base_backups TO vaultline_extractor;
-- Retention forgets WAL no kept base backup needs; base rows go with
-- their snapshot.
GRANT SELECT ON base_backups TO vaultline_retention;
GRANT SELECT, DELETE ON wal_files TO vaultline_retention;
-- The verifier's PITR drills and the observer's archiving metrics read both.
GRANT SELECT ON base_backups, wal_files TO vaultline_verifier, vaultline_auditor;
