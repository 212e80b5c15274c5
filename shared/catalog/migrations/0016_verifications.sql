-- Verifications asked for by name (the HTTP API): what each found, under
-- the caller's request id. The verifier records them; nothing updates one.
CREATE TABLE verifications (
    tenant      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    source      TEXT NOT NULL,
    snapshot    TEXT NOT NULL,
    level       SMALLINT NOT NULL CHECK (level IN (1, 2)),
    outcome     TEXT NOT NULL CHECK (outcome IN ('passed', 'failed', 'error')),
    objects     INTEGER NOT NULL,
    files       BIGINT,
    bytes       BIGINT,
    problems    JSONB NOT NULL,
    error       TEXT,
    started_at  TIMESTAMPTZ NOT NULL,
    duration_ms BIGINT NOT NULL,
    -- Orders a snapshot's verifications (started_at has whole seconds).
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, request_id)
);
CREATE INDEX verifications_by_snapshot ON verifications (tenant, snapshot, recorded_at DESC);
GRANT SELECT, INSERT ON verifications TO vaultline_verifier;
GRANT SELECT ON verifications TO vaultline_api;
