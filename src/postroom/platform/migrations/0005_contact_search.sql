-- Reading contacts at scale: the per-workspace contact count, and trigram indexes for the
-- substring filters of contacts.list.

-- contacts.count reads the sum of a workspace's delta rows instead of counting its contacts.
-- Every transaction that inserts or deletes contacts appends its net change here in that same
-- transaction, and writers now and then fold a workspace's rows into one
-- (contacts.store.adjust_count).
CREATE TABLE contact_counts (
    workspace_id text NOT NULL,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    delta        bigint NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

INSERT INTO contact_counts (workspace_id, delta)
SELECT workspace_id, count(*) FROM contacts GROUP BY workspace_id;

-- Substring filters (contacts.list email=..., first_name=..., ...) as trigram GIN indexes,
-- led by workspace_id like every index (btree_gin lets a GIN index hold it). They need the
-- contrib extensions pg_trgm and btree_gin: present in most PostgreSQL packages, absent from
-- the embedded server's binaries. Without them, or without the right to create them, the
-- indexes are skipped and substring filters scan the workspace instead (slower, same answers).
-- The expressions are the ones contacts.store compares: email as stored (lower-case already),
-- the other fields through lower(). country and language are left out: their values are a few
-- characters long, shorter than the three a trigram needs to narrow anything down.
DO $$
BEGIN
    IF (SELECT count(*) FROM pg_available_extensions WHERE name IN ('pg_trgm', 'btree_gin')) < 2 THEN
        RAISE NOTICE 'pg_trgm/btree_gin not available: contact substring filters will not be indexed';
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE EXTENSION IF NOT EXISTS btree_gin;
        CREATE INDEX contacts_search_email ON contacts USING gin (workspace_id, email gin_trgm_ops);
        CREATE INDEX contacts_search_external_id ON contacts USING gin (workspace_id, lower(external_id) gin_trgm_ops);
        CREATE INDEX contacts_search_first_name ON contacts USING gin (workspace_id, lower(first_name) gin_trgm_ops);
        CREATE INDEX contacts_search_last_name ON contacts USING gin (workspace_id, lower(last_name) gin_trgm_ops);
        CREATE INDEX contacts_search_full_name ON contacts USING gin (workspace_id, lower(full_name) gin_trgm_ops);
        CREATE INDEX contacts_search_phone ON contacts USING gin (workspace_id, lower(phone) gin_trgm_ops);
    EXCEPTION
        -- no right to create extensions, files missing, or the extensions live in a schema
        -- outside the search path (gin_trgm_ops unknown): undo this block, keep the rest
        WHEN insufficient_privilege OR feature_not_supported OR undefined_file OR undefined_object THEN
            RAISE NOTICE 'contact substring filters will not be indexed: %', SQLERRM;
    END;
END
$$;
