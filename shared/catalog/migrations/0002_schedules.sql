-- Interval schedules, one per source. last_slot is the last slot fired or
-- skipped (slot = unix seconds / every_seconds); the scheduler claims a slot
-- with UPDATE … WHERE last_slot < slot, so only one replica fires it.
CREATE TABLE schedules (
    tenant         TEXT NOT NULL,
    source         TEXT NOT NULL,
    every_seconds  BIGINT NOT NULL CHECK (every_seconds > 0),
    enabled        BOOLEAN NOT NULL DEFAULT true,
    last_slot      BIGINT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, source),
    FOREIGN KEY (tenant, source) REFERENCES sources(tenant, name)
);
