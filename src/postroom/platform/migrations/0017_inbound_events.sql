-- Provider events (engagement-contract 3, 4): what email providers post back about delivered,
-- bounced and complained mail, and each integration's webhook credentials.

-- One row per normalised event. `id` is derived from the provider's own dedupe key (3.7), so a
-- repeated delivery of one event meets the primary key and is stored, and applied, once.
CREATE TABLE inbound_webhook_events (
    workspace_id            text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id                      uuid NOT NULL,
    type                    text NOT NULL CHECK (type IN ('delivered', 'bounce', 'complaint', 'unsubscribe')),
    source                  text NOT NULL,
    integration_id          text NOT NULL,
    recipient_email         text NOT NULL,
    message_id              text,
    timestamp               timestamptz NOT NULL,
    raw_payload             text NOT NULL,
    bounce_type             text,
    bounce_category         text,
    bounce_diagnostic       text,
    bounce_classification   text CHECK (bounce_classification IN ('hard', 'soft_count', 'soft_ignore')),
    complaint_feedback_type text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);
-- inboundWebhookEvents.list pages, newest first (3.8).
CREATE INDEX inbound_webhook_events_time ON inbound_webhook_events (workspace_id, timestamp DESC, id DESC);
-- A recipient's soft bounces since its last delivery (3.6), and the list's recipient filter.
CREATE INDEX inbound_webhook_events_recipient ON inbound_webhook_events (workspace_id, recipient_email, timestamp);

-- Per integration: the secret its callback URLs carry (3.2; 32 random bytes sealed with AES-GCM,
-- bound to the row), the SNS topics registration made, and when
-- the last verified event arrived (4.3). Goes with its integration.
CREATE TABLE inbound_webhook_credentials (
    workspace_id       text NOT NULL,
    integration_id     text NOT NULL,
    secret             bytea NOT NULL,
    sns_topic_arns     text[] NOT NULL DEFAULT '{}',
    last_event_at      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, integration_id),
    FOREIGN KEY (workspace_id, integration_id) REFERENCES email_integrations (workspace_id, id) ON DELETE CASCADE
);

-- Events that carry only the provider's own id are matched on it (3.3).
CREATE INDEX message_history_provider_id ON message_history (workspace_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
