-- Delivery: email integrations, the message history, the send queue, the shared token buckets
-- and circuit breakers, and attachments stored once by checksum (delivery-contract 1, 4, 5).
-- Every key and index starts with workspace_id (architecture: shared tables, Citus-ready).

-- A workspace's email provider integrations. In a table rather than the workspace's settings
-- JSON: the send loop reads one integration per claim by key, and updates must not rewrite
-- (and race on) the whole settings document. `secrets` is the kind's secret fields as one JSON
-- object sealed with AES-GCM (platform.secrets, bound to workspace and id); `secret_fields`
-- names which are set, so a read masks them without decrypting anything.
CREATE TABLE email_integrations (
    workspace_id          text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id                    text NOT NULL,
    name                  text NOT NULL,
    kind                  text NOT NULL,
    settings              jsonb NOT NULL,
    secrets               bytea,
    secret_fields         text[] NOT NULL DEFAULT '{}',
    senders               jsonb NOT NULL,
    rate_limit_per_minute integer NOT NULL CHECK (rate_limit_per_minute > 0),
    max_concurrency       integer CHECK (max_concurrency BETWEEN 1 AND 64),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);

-- One row per message, written at enqueue (status queued) and kept after the send.
-- `message_data` is {"data", "metadata"} sealed with the workspace's message-data secret: template
-- data often holds personal data and is never stored in clear (Notifuse issue: rewritten in
-- plaintext on failure).
CREATE TABLE message_history (
    workspace_id                  text NOT NULL,
    id                            text NOT NULL,
    external_id                   text,
    contact_email                 text NOT NULL,
    broadcast_id                  text,
    automation_id                 text,
    transactional_notification_id text,
    list_id                       text,
    template_id                   text NOT NULL,
    template_version              integer NOT NULL,
    channel                       text NOT NULL DEFAULT 'email',
    status                        text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    status_info                   text,
    message_data                  bytea,
    channel_options               jsonb,
    attachments                   jsonb,
    integration_id                text,
    attempts                      integer NOT NULL DEFAULT 0,
    provider_message_id           text,
    sent_at                       timestamptz NOT NULL DEFAULT now(),
    delivered_at                  timestamptz,
    failed_at                     timestamptz,
    opened_at                     timestamptz,
    clicked_at                    timestamptz,
    bounced_at                    timestamptz,
    complained_at                 timestamptz,
    unsubscribed_at               timestamptz,
    created_at                    timestamptz NOT NULL DEFAULT now(),
    updated_at                    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);
-- Idempotent sends (3.7): one message per external id.
CREATE UNIQUE INDEX message_history_external_id ON message_history (workspace_id, external_id)
    WHERE external_id IS NOT NULL;
-- messages.list pages (4.3): cost independent of the page number.
CREATE INDEX message_history_created ON message_history (workspace_id, created_at DESC, id DESC);
-- broadcastStats and a broadcast's completion (5.7).
CREATE INDEX message_history_broadcast ON message_history (workspace_id, broadcast_id, status)
    WHERE broadcast_id IS NOT NULL;
-- Provider events matched back to messages (2.9).
CREATE INDEX message_history_contact ON message_history (workspace_id, contact_email, created_at DESC);

-- The send queue (5.1). A row exists while its message is queued; a final outcome deletes it.
-- `claim_id` fences completions: an outcome applies only to the claim it came from, so a worker
-- that lost its lease cannot overwrite the outcome of the claim that replaced it.
CREATE TABLE email_queue (
    workspace_id     text NOT NULL,
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'failed', 'paused')),
    priority         smallint NOT NULL,
    source_type      text NOT NULL,
    source_id        text,
    integration_id   text NOT NULL,
    provider_kind    text NOT NULL,
    contact_email    text NOT NULL,
    message_id       text NOT NULL,
    template_id      text NOT NULL,
    payload          jsonb NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    throttled        integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    last_error       text,
    -- when the row is due: its enqueue time, then each retry's. Never null (Notifuse: null = due
    -- now), so one btree order serves the claim (priority, due time) and the due probe below.
    next_retry_at    timestamptz NOT NULL DEFAULT now(),
    claim_id         uuid,
    lease_expires_at timestamptz,
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, message_id)
);
-- Due rows of an integration in claim order (5.6 step 3), and the walk of integrations with
-- waiting rows (5.6 step 2).
CREATE INDEX email_queue_due ON email_queue (workspace_id, integration_id, priority, next_retry_at, created_at)
    WHERE status IN ('pending', 'failed');
-- "Has this integration a due row?": one probe for the earliest due time.
CREATE INDEX email_queue_next ON email_queue (workspace_id, integration_id, next_retry_at)
    WHERE status IN ('pending', 'failed');
-- The sweep of expired leases.
CREATE INDEX email_queue_leased ON email_queue (workspace_id, lease_expires_at) WHERE status = 'processing';
-- Pause, resume and cancel of a source (broadcasts).
CREATE INDEX email_queue_source ON email_queue (workspace_id, source_type, source_id);

-- Per integration, shared by every process: the token bucket (5.4) and the breaker (5.5).
CREATE TABLE delivery_budget (
    workspace_id         text NOT NULL,
    integration_id       text NOT NULL,
    tokens               double precision NOT NULL,
    refilled_at          timestamptz NOT NULL DEFAULT now(),
    breaker              text NOT NULL DEFAULT 'closed' CHECK (breaker IN ('closed', 'open', 'half_open')),
    consecutive_failures integer NOT NULL DEFAULT 0,
    open_until           timestamptz,
    opened_count         integer NOT NULL DEFAULT 0,
    throttled_until      timestamptz,
    PRIMARY KEY (workspace_id, integration_id)
);

-- Attachment bytes, once per workspace and checksum (3.7.1); messages and queue rows refer to
-- them by checksum.
CREATE TABLE message_attachments (
    workspace_id text NOT NULL,
    sha256       text NOT NULL,
    content      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, sha256)
);
