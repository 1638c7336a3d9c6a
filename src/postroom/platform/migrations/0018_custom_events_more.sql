-- customEvents.list by event_name, newest first (segments-contract, get and list): the primary key
-- leads with event_name but cannot give the occurred_at order; deleted events are never listed.
CREATE INDEX custom_events_name ON custom_events (workspace_id, event_name, occurred_at DESC)
    WHERE deleted_at IS NULL;
