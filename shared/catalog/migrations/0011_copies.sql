-- Copies of the repository ([[repository.copies]]). The copier records, per
-- snapshot and copy, whether the copy is pending, stored or verified, and
-- every object a copy is known to hold, so a copy moves only what the
-- target lacks and a pack shared by many snapshots is moved and read back once.

CREATE TABLE snapshot_copies (
    tenant        TEXT NOT NULL,
    snapshot      TEXT NOT NULL,
    target        TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'stored', 'verified')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    -- The last failure, one sentence; NULL once the copy went through.
    error         TEXT,
    first_tried   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_tried    TIMESTAMPTZ NOT NULL DEFAULT now(),
    stored_at     TIMESTAMPTZ,
    verified_at   TIMESTAMPTZ,
    objects_moved INTEGER NOT NULL DEFAULT 0,
    bytes_moved   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, snapshot, target),
    FOREIGN KEY (tenant, snapshot) REFERENCES snapshots(tenant, id)
);
CREATE INDEX snapshot_copies_by_target ON snapshot_copies (target, status);

-- An object a copy holds: put there by the copier (stored) and read back
-- with the digest it was copied with (verified).
CREATE TABLE copied_objects (
    target      TEXT NOT NULL,
    key         TEXT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      BYTEA NOT NULL,
    stored_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    verified_at TIMESTAMPTZ,
    PRIMARY KEY (target, key)
);

-- The copier: reads what a snapshot is made of (never a key or a source's
-- config), records its copies.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vaultline_copier') THEN
        BEGIN
            CREATE ROLE vaultline_copier LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO vaultline_copier;
GRANT SELECT ON schema_migrations TO vaultline_copier;
GRANT SELECT (tenant, id, source, status, key_id, stored_at, manifest_digest, manifest_size)
    ON snapshots TO vaultline_copier;
GRANT SELECT ON snapshot_packs TO vaultline_copier;
GRANT SELECT (tenant, id, size) ON packs TO vaultline_copier;
GRANT SELECT, INSERT, UPDATE ON snapshot_copies, copied_objects TO vaultline_copier;

-- Retention forgets copies with their snapshots (deleting the objects there too).
GRANT SELECT, DELETE ON snapshot_copies, copied_objects TO vaultline_retention;
-- The observer and the CLI show the copies' state.
GRANT SELECT ON snapshot_copies TO vaultline_auditor;
