-- Transactional notifications (delivery-contract 3): the named, client-keyed recipe that
-- transactional.send turns into a message (which template per channel, tracking and UTM).
-- Soft-deleted: `deleted_at` hides a notification from every route, and create may reuse a
-- deleted id by overwriting the row (the primary key would otherwise block it forever).
CREATE TABLE transactional_notifications (
    workspace_id      text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id                text NOT NULL,
    name              text NOT NULL,
    description       text NOT NULL DEFAULT '',
    channels          jsonb NOT NULL,
    tracking_settings jsonb NOT NULL,
    metadata          jsonb,
    integration_id    text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    PRIMARY KEY (workspace_id, id)
);
-- transactional.list (3.2): live notifications, newest first.
CREATE INDEX transactional_notifications_live ON transactional_notifications (workspace_id, created_at DESC, id)
    WHERE deleted_at IS NULL;
