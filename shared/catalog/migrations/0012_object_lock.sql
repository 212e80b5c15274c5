-- Object lock: until when each pack is locked in the repository (NULL: not
-- locked, or written before the lock was configured). Garbage collection
-- never takes a pack before that date; it shows it as held, with the date.
ALTER TABLE packs ADD COLUMN locked_until TIMESTAMPTZ;
ALTER TABLE copied_objects ADD COLUMN locked_until TIMESTAMPTZ;
