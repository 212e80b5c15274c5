-- When the verifier last read a pack back and found its SHA-256 matching.
-- A snapshot's level-1 check re-hashes the packs not hashed within the
-- verifier's rehash-after (new packs have none yet) and checks the rest by
-- size, so a backup that adds little is not slowed by re-reading the whole
-- repository, and every pack is still re-read on a rolling schedule.
ALTER TABLE packs ADD COLUMN hashed_at TIMESTAMPTZ;
