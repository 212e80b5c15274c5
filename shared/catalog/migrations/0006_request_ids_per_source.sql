-- Request ids are unique per (tenant, source), not across the catalog: a
-- tenant that reuses another tenant's request id gets its own snapshot and
-- cannot make the other's trigger collide with a row it does not own.
DROP INDEX snapshots_by_request;
CREATE UNIQUE INDEX snapshots_by_request ON snapshots (tenant, source, request_id)
    WHERE request_id IS NOT NULL;
