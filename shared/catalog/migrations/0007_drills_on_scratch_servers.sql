-- Drills restore into the scratch server named in the verifier's own
-- configuration. A source's own server is used only when the person who
-- added the source said so: catalog data alone must not choose where a
-- decrypted dump goes.
ALTER TABLE sources ADD COLUMN drill_on_source BOOLEAN NOT NULL DEFAULT false;
