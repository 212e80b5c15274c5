-- Source credentials, sealed to the credentials key (not the KEK: the
-- extractor opens them and must never be able to unwrap tenant identities).
-- One per source; the placeholder table and column of 0001 were never used.
ALTER TABLE sources DROP COLUMN credential;
DROP TABLE credentials;
CREATE TABLE credentials (
    tenant      TEXT NOT NULL,
    source      TEXT NOT NULL,
    sealed      BYTEA NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, source),
    FOREIGN KEY (tenant, source) REFERENCES sources (tenant, name) ON DELETE CASCADE
);

-- Verification level after every snapshot: 1 (stored digests) or 2 (full:
-- decrypt, decompress, reassemble, compare the source digest).
ALTER TABLE sources ADD COLUMN verify_level SMALLINT NOT NULL DEFAULT 1 CHECK (verify_level IN (1, 2));

-- Row count of every table at dump time (database sources), as in the manifest.
ALTER TABLE snapshots ADD COLUMN tables JSONB;

-- Restore drills: how often a source wants one, and each run, what it
-- compared and how it ended.
ALTER TABLE sources ADD COLUMN drill_every_seconds BIGINT CHECK (drill_every_seconds > 0);
CREATE TABLE drills (
    id           BIGSERIAL PRIMARY KEY,
    tenant       TEXT NOT NULL,
    source       TEXT NOT NULL,
    snapshot     TEXT,
    request_id   TEXT,
    started_at   TIMESTAMPTZ NOT NULL,
    duration_ms  BIGINT NOT NULL,
    outcome      TEXT NOT NULL,
    tables       JSONB NOT NULL,
    error        TEXT
);
CREATE INDEX drills_by_source ON drills (tenant, source, started_at DESC);
