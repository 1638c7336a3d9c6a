-- Outgoing webhooks: subscriptions, the delivery queue (which is also the delivery log), and the
-- outbox column that records which events the webhook dispatcher has fanned out.

CREATE TABLE webhook_subscriptions (
    workspace_id         text NOT NULL,
    id                   text NOT NULL,
    name                 text NOT NULL,
    url                  text NOT NULL,
    -- "whsec_..." sealed with platform.secrets (AES-256-GCM, key derived from SECRET_KEY,
    -- bound to (workspace_id, id)).
    secret               bytea NOT NULL,
    event_types          text[] NOT NULL,
    custom_event_filters jsonb,
    enabled              boolean NOT NULL DEFAULT true,
    last_delivery_at     timestamptz,
    -- attempts failed in a row (0 after any success): a failing subscription gets fewer slots
    consecutive_failures integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);

-- One row per (subscription, outbox event): queued, in flight, delivered, failed or cancelled.
-- `message_id` is the webhook-id header and the body's "id": the same on every attempt.
-- `attempts` counts claims; a completion only applies to the claim it belongs to (fencing).
CREATE TABLE webhook_deliveries (
    workspace_id         text NOT NULL,
    id                   bigint GENERATED ALWAYS AS IDENTITY,
    subscription_id      text NOT NULL,
    event_id             bigint NOT NULL,
    event_type           text NOT NULL,
    subject              text,
    message_id           text NOT NULL,
    data                 jsonb NOT NULL,
    occurred_at          timestamptz NOT NULL,
    status               text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'delivering', 'delivered', 'failed', 'cancelled')),
    attempts             integer NOT NULL DEFAULT 0,
    max_attempts         integer NOT NULL,
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    claimed_until        timestamptz,
    last_attempt_at      timestamptz,
    delivered_at         timestamptz,
    last_response_status integer,
    last_response_body   text,
    last_error           text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id),
    -- An event is fanned out to a subscription at most once, whatever the dispatchers do.
    UNIQUE (workspace_id, subscription_id, event_id),
    FOREIGN KEY (workspace_id, subscription_id) REFERENCES webhook_subscriptions (workspace_id, id)
        ON DELETE CASCADE
);
-- The due queue of a subscription.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (workspace_id, subscription_id, next_attempt_at, id)
    WHERE status = 'pending';
-- Per-subject ordering: is an earlier delivery of this subject still open?
CREATE INDEX webhook_deliveries_open_subject ON webhook_deliveries (workspace_id, subscription_id, subject, id)
    WHERE status IN ('pending', 'delivering');
-- In flight: the per-subscription concurrency count and the sweep of expired leases.
CREATE INDEX webhook_deliveries_in_flight ON webhook_deliveries (workspace_id, subscription_id, claimed_until)
    WHERE status = 'delivering';
-- The log, newest first, per subscription (the whole workspace's log uses the primary key).
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (workspace_id, subscription_id, id DESC);
-- Retention.
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (workspace_id, created_at);

-- The dispatcher claims outbox events that have no webhooks_dispatched_at yet, through this
-- partial index, rather than following an id watermark: identity values can commit out of order,
-- and an event whose transaction commits late is still found here. Events written before this
-- migration count as dispatched (no subscription existed to want them): the column is added with
-- a constant default, which fills existing rows without rewriting the table, and the default is
-- then dropped so that new events arrive undispatched.
ALTER TABLE events ADD COLUMN webhooks_dispatched_at timestamptz DEFAULT '-infinity';
ALTER TABLE events ALTER COLUMN webhooks_dispatched_at DROP DEFAULT;
CREATE INDEX events_webhooks_undispatched ON events (workspace_id, id) WHERE webhooks_dispatched_at IS NULL;
