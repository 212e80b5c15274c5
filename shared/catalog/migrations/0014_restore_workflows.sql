-- Restore workflows (issue 22): protected snapshots, and the record of
-- restores into live applications.

-- Protected snapshots (`vaultline snapshot protect`): retention never
-- forgets them, and no one expires them until an operator unprotects them.
ALTER TABLE snapshots ADD COLUMN protected BOOLEAN NOT NULL DEFAULT false;

-- The database refuses it too, so a retention worker that is compromised,
-- or races a protect, cannot expire one: it fails before its manifest goes.
CREATE FUNCTION refuse_expiring_protected() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.protected AND NEW.status = 'expired' AND OLD.status <> 'expired' THEN
        RAISE EXCEPTION 'snapshot %/% is protected: unprotect it before it can be forgotten',
            NEW.tenant, NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER snapshots_protected_never_expire
    BEFORE UPDATE OF status ON snapshots
    FOR EACH ROW EXECUTE FUNCTION refuse_expiring_protected();

-- Protection is the operator's alone: the stages that update snapshots keep
-- UPDATE on every other column, but not on this one.
DO $$
DECLARE
    stage TEXT;
    columns TEXT;
BEGIN
    SELECT string_agg(quote_ident(column_name), ', ') INTO columns
      FROM information_schema.columns
     WHERE table_schema = current_schema() AND table_name = 'snapshots'
       AND column_name <> 'protected';
    FOREACH stage IN ARRAY ARRAY['extractor', 'uploader', 'verifier', 'retention', 'auditor'] LOOP
        EXECUTE format('REVOKE UPDATE ON snapshots FROM %I', 'vaultline_' || stage);
        EXECUTE format('GRANT UPDATE (%s) ON snapshots TO %I', columns, 'vaultline_' || stage);
    END LOOP;
END
$$;

-- Restores into databases and commands (`vaultline restore --into … --app …`):
-- each run's steps and checks, as its restore.completed event said. The
-- auditor records them (and a history row, trigger 'restore').
CREATE TABLE restores (
    tenant          TEXT NOT NULL,
    id              TEXT NOT NULL,
    source          TEXT NOT NULL,
    snapshot        TEXT NOT NULL,
    target          TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    safety_snapshot TEXT,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ NOT NULL,
    results         JSONB NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX restores_by_source ON restores (tenant, source, started_at);
GRANT SELECT, INSERT ON restores TO vaultline_auditor;

-- Labels a trigger gave a snapshot (`vaultline backup --label k=v`), e.g.
-- the application version a restore into the live application checks.
-- Written once by the extractor's INSERT; no stage updates them.
ALTER TABLE snapshots ADD COLUMN labels JSONB NOT NULL DEFAULT '{}';
