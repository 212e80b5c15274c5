-- Key rotation. A tenant key that is no longer active was rotated out at
-- rotated_at; it is kept for as long as the catalog is, since snapshots
-- taken after the rotation still reference packs sealed to it (the chunk-id
-- key is carried over, so dedup goes on across the rotation).
ALTER TABLE tenant_keys ADD COLUMN rotated_at TIMESTAMPTZ;
