-- Custom events (segments-contract, Custom events): the latest known state of one fact of an
-- outside system (an order, a payment, a trial), keyed by (event_name, external_id) in a
-- workspace and attached to a contact by its normalised email. Soft-deleted: `deleted_at` set
-- hides the event from segments and lists, null restores it.
CREATE TABLE custom_events (
    workspace_id   text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    event_name     text NOT NULL,
    external_id    text NOT NULL,
    email          text NOT NULL,
    properties     jsonb NOT NULL DEFAULT '{}',
    occurred_at    timestamptz NOT NULL,
    source         text NOT NULL DEFAULT 'api',
    integration_id text,
    goal_name      text,
    goal_type      text,
    goal_value     numeric(15, 2),
    deleted_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, event_name, external_id)
);
-- A contact's events, newest first: customEvents.list by email and the goal leaves of segments.
CREATE INDEX custom_events_contact ON custom_events (workspace_id, email, occurred_at DESC);
