-- The operating loop: cron schedules, garbage collection, webhooks.

-- A schedule is a cron expression in an IANA time zone, or an interval.
-- last_slot becomes the unix time (seconds) at which the last fired or skipped
-- slot began, for both kinds; last_request is the trigger fired for it, so a
-- slot fired but not yet picked up still counts as in flight.
ALTER TABLE schedules ALTER COLUMN every_seconds DROP NOT NULL;
ALTER TABLE schedules ADD COLUMN cron TEXT;
ALTER TABLE schedules ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';
ALTER TABLE schedules ADD COLUMN last_request TEXT;
ALTER TABLE schedules ADD COLUMN last_fired_at TIMESTAMPTZ;
UPDATE schedules SET last_slot = last_slot * every_seconds;
ALTER TABLE schedules ADD CONSTRAINT schedules_cron_or_interval
    CHECK ((cron IS NULL) <> (every_seconds IS NULL));

-- Garbage collection, in two phases: a pack no live snapshot references is
-- condemned; after the grace period it is swept (chunk rows first, so no new
-- backup can dedup against it, then the object, then the row). A dedup lookup
-- that finds a chunk in a condemned pack revives the pack.
ALTER TABLE packs ADD COLUMN condemned_at TIMESTAMPTZ;
ALTER TABLE packs ADD COLUMN deleting BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX packs_condemned ON packs (tenant, condemned_at) WHERE condemned_at IS NOT NULL;
CREATE INDEX snapshot_packs_by_pack ON snapshot_packs (tenant, pack);
CREATE INDEX snapshot_batches_by_pack ON snapshot_batches (tenant, pack);
CREATE INDEX snapshots_in_flight ON snapshots (tenant, started_at)
    WHERE status IN ('extracting', 'extracted', 'stored');

-- Signed webhooks per tenant. The secret is sealed with the key-encryption key.
CREATE TABLE webhooks (
    tenant         TEXT NOT NULL REFERENCES tenants(name),
    id             TEXT NOT NULL,
    url            TEXT NOT NULL,
    sealed_secret  BYTEA NOT NULL,
    on_success     BOOLEAN NOT NULL DEFAULT false,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);

-- One row per (webhook, event): an outbox the auditor's sender drains. The
-- body is fixed when the event is recorded, so every retry sends the same bytes.
CREATE TABLE webhook_deliveries (
    id               BIGSERIAL PRIMARY KEY,
    tenant           TEXT NOT NULL,
    webhook          TEXT NOT NULL,
    event_msg_id     TEXT NOT NULL,
    event_kind       TEXT NOT NULL,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_http_status INTEGER,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at     TIMESTAMPTZ,
    UNIQUE (tenant, webhook, event_msg_id),
    FOREIGN KEY (tenant, webhook) REFERENCES webhooks(tenant, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    delivery     BIGINT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    http_status  INTEGER,
    error        TEXT,
    PRIMARY KEY (delivery, attempt)
);

CREATE INDEX executions_by_source ON executions (tenant, source, started_at);
