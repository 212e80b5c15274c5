-- vaultline catalog, version 1. Every table is keyed by tenant first.

CREATE TABLE tenants (
    name        TEXT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The private half is stored only wrapped by the key-encryption key.
CREATE TABLE tenant_keys (
    tenant            TEXT NOT NULL REFERENCES tenants(name),
    key_id            TEXT NOT NULL,
    recipient         TEXT NOT NULL,
    wrapped_identity  BYTEA NOT NULL,
    chunk_key         BYTEA NOT NULL,
    active            BOOLEAN NOT NULL DEFAULT true,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, key_id)
);
CREATE UNIQUE INDEX tenant_keys_one_active ON tenant_keys (tenant) WHERE active;

-- Source credentials, sealed by the key-encryption key; events carry only the id.
CREATE TABLE credentials (
    tenant      TEXT NOT NULL REFERENCES tenants(name),
    id          TEXT NOT NULL,
    sealed      BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);

CREATE TABLE sources (
    tenant      TEXT NOT NULL REFERENCES tenants(name),
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    config      JSONB NOT NULL,
    credential  TEXT,
    retention   JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);

CREATE TABLE snapshots (
    tenant           TEXT NOT NULL REFERENCES tenants(name),
    id               TEXT NOT NULL,
    source           TEXT NOT NULL,
    status           TEXT NOT NULL,
    trigger          TEXT NOT NULL,
    request_id       TEXT,
    key_id           TEXT NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    extracted_at     TIMESTAMPTZ,
    stored_at        TIMESTAMPTZ,
    verified_at      TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    attempt          INTEGER,
    batches_total    INTEGER,
    files            BIGINT NOT NULL DEFAULT 0,
    bytes_read       BIGINT NOT NULL DEFAULT 0,
    bytes_new        BIGINT NOT NULL DEFAULT 0,
    bytes_stored     BIGINT NOT NULL DEFAULT 0,
    source_digest    TEXT,
    manifest_digest  TEXT,
    manifest_size    BIGINT,
    error            TEXT,
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, source) REFERENCES sources(tenant, name)
);
CREATE INDEX snapshots_by_source ON snapshots (tenant, source, started_at);
CREATE UNIQUE INDEX snapshots_by_request ON snapshots (request_id) WHERE request_id IS NOT NULL;

CREATE TABLE packs (
    tenant     TEXT NOT NULL REFERENCES tenants(name),
    id         BYTEA NOT NULL,   -- SHA-256 of the stored bytes: id and digest at once
    size       BIGINT NOT NULL,
    blobs      INTEGER NOT NULL,
    stored_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);

-- The chunk index: a chunk is here only once its pack is stored.
CREATE TABLE chunks (
    tenant       TEXT NOT NULL,
    id           BYTEA NOT NULL,
    pack         BYTEA NOT NULL,
    pack_offset  BIGINT NOT NULL,
    length       INTEGER NOT NULL,
    raw_length   INTEGER NOT NULL,
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, pack) REFERENCES packs(tenant, id)
);
CREATE INDEX chunks_by_pack ON chunks (tenant, pack);

-- Which batch of a snapshot became which pack (completion tracking).
CREATE TABLE snapshot_batches (
    tenant    TEXT NOT NULL,
    snapshot  TEXT NOT NULL,
    attempt   INTEGER NOT NULL,
    batch     INTEGER NOT NULL,
    pack      BYTEA NOT NULL,
    PRIMARY KEY (tenant, snapshot, attempt, batch),
    FOREIGN KEY (tenant, snapshot) REFERENCES snapshots(tenant, id)
);

-- Every pack a snapshot's manifest references (verification, GC).
CREATE TABLE snapshot_packs (
    tenant    TEXT NOT NULL,
    snapshot  TEXT NOT NULL,
    pack      BYTEA NOT NULL,
    PRIMARY KEY (tenant, snapshot, pack),
    FOREIGN KEY (tenant, snapshot) REFERENCES snapshots(tenant, id)
);

CREATE TABLE executions (
    tenant        TEXT NOT NULL,
    snapshot      TEXT NOT NULL,
    source        TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    status        TEXT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    duration_ms   BIGINT,
    bytes_read    BIGINT,
    bytes_stored  BIGINT,
    error         TEXT,
    PRIMARY KEY (tenant, snapshot)
);

-- Append-only; each row's hash chains to the previous row of its tenant.
CREATE TABLE audit_events (
    id           BIGSERIAL PRIMARY KEY,
    tenant       TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    msg_id       TEXT NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    snapshot     TEXT,
    payload      TEXT NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    prev_hash    BYTEA NOT NULL,
    hash         BYTEA NOT NULL,
    UNIQUE (tenant, seq)
);
