-- The auditor observes: it exports per-source and per-tenant figures from the
-- catalog (last success, failure streak, schedule interval, drills, repository
-- bytes, snapshots in flight), so every replica reports the same values and a
-- restart loses none. It reads names, sizes and times only: no source config,
-- credential or key.

-- How long a snapshot of the source may stay in flight before the reaper
-- fails it (NULL: the configured default, 6 h).
ALTER TABLE sources ADD COLUMN deadline_seconds BIGINT CHECK (deadline_seconds > 0);

GRANT SELECT (name) ON tenants TO vaultline_auditor;
GRANT SELECT (tenant, name, deadline_seconds, drill_every_seconds) ON sources TO vaultline_auditor;
GRANT SELECT ON schedules, drills TO vaultline_auditor;
GRANT SELECT (tenant, size, deleting) ON packs TO vaultline_auditor;

-- The observer asks each source for its newest finished runs.
CREATE INDEX executions_finished_by_source ON executions (tenant, source, finished_at);
