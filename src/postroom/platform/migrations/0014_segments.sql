-- Segments (segments-contract): saved trees, their membership (contact_segments, created with
-- the audience in 0002) and the segments consumer of the outbox.

-- A segment. `tree` is the DSL as the client sent it; `generated_sql` / `generated_args` the
-- predicate segments.compiler made of it (for debugging; recompiled from the tree when used).
-- `depends` names what can move a member (segments.model dependency keys: "contacts",
-- "list:<id>", "timeline:<kind>", "goal:<type>"), so the outbox consumer re-checks a contact
-- only against the segments an event can affect. A deleted segment keeps its row: its id stays
-- reserved.
--
-- A scan (build, rebuild or daily recompute) is pending while scan_version is set: the build
-- loop walks the workspace's contacts in email order from scan_after, one chunk a transaction,
-- holding the row's lock for the chunk. A tree change sets a new version and restarts the scan
-- (scan_after NULL), so a chunk of a superseded build can never be written.
CREATE TABLE segments (
    workspace_id    text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id              text NOT NULL,
    name            text NOT NULL,
    color           text NOT NULL,
    tree            jsonb NOT NULL,
    timezone        text NOT NULL,
    version         integer NOT NULL DEFAULT 1,
    status          text NOT NULL DEFAULT 'building' CHECK (status IN ('building', 'active', 'deleted')),
    generated_sql   text,
    generated_args  jsonb,
    depends         text[] NOT NULL DEFAULT '{}',
    relative        boolean NOT NULL DEFAULT false,
    recompute_after timestamptz,
    scan_version    integer,
    scan_after      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, id)
);
-- segments.list: newest first.
CREATE INDEX segments_live ON segments (workspace_id, created_at DESC, id) WHERE status <> 'deleted';
-- The build loop's queue: segments with a scan to run.
CREATE INDEX segments_scan ON segments (workspace_id, updated_at) WHERE scan_version IS NOT NULL;
-- The daily recompute of relative-date trees.
CREATE INDEX segments_recompute ON segments (workspace_id, recompute_after)
    WHERE relative AND status = 'active';

-- A membership: which version last confirmed it (computed_at) and when the contact joined
-- (matched_at, kept across rebuilds). No segment existed before this migration.
ALTER TABLE contact_segments ADD COLUMN version integer NOT NULL DEFAULT 1;
ALTER TABLE contact_segments ADD COLUMN computed_at timestamptz NOT NULL DEFAULT now();
-- No index on matched_at: segments.contacts sorts a segment's members (a top-N sort over the
-- primary key's range of the segment). Measured: with one, a planner working from a young
-- table's statistics took it for the chunks' lookups of a range of emails and scanned the whole
-- segment for each chunk.

-- A JSON string read as a time by a segment filter: RFC 3339 with an offset, or YYYY-MM-DD
-- (00:00 UTC). Anything else, a day that does not exist included, is NULL: a filter never fails
-- on data. Immutable: a value with an explicit offset does not depend on the session's zone.
CREATE FUNCTION segment_try_time(v text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF v ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN
        RETURN (v || 'T00:00:00Z')::timestamptz;
    END IF;
    IF v ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$' THEN
        RETURN v::timestamptz;
    END IF;
    RETURN NULL;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;

-- The segments consumer of the outbox (events.dispatch), like webhooks' column in 0004: events
-- written before this migration count as consumed (no segment existed to be moved by them).
ALTER TABLE events ADD COLUMN segments_consumed_at timestamptz DEFAULT '-infinity';
ALTER TABLE events ALTER COLUMN segments_consumed_at DROP DEFAULT;
CREATE INDEX events_segments_unconsumed ON events (workspace_id, id) WHERE segments_consumed_at IS NULL;
