-- Broadcasts (broadcasts-contract): the campaign row, and its recipients frozen at start.
CREATE TABLE broadcasts (
    workspace_id                 text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id                           text NOT NULL,
    name                         text NOT NULL,
    status                       text NOT NULL DEFAULT 'draft',
    audience                     jsonb NOT NULL,
    schedule                     jsonb NOT NULL,
    test_settings                jsonb NOT NULL,
    utm_parameters               jsonb NOT NULL DEFAULT '{}',
    metadata                     jsonb NOT NULL DEFAULT '{}',
    data_feed                    jsonb,
    winning_template             text,
    test_sent_at                 timestamptz,
    winner_sent_at               timestamptz,
    test_phase_recipient_count   integer NOT NULL DEFAULT 0,
    winner_phase_recipient_count integer NOT NULL DEFAULT 0,
    enqueued_count               integer NOT NULL DEFAULT 0,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    started_at                   timestamptz,
    completed_at                 timestamptz,
    cancelled_at                 timestamptz,
    paused_at                    timestamptz,
    pause_reason                 text,
    -- Postroom's own bookkeeping, never on the wire as such:
    start_at                     timestamptz,   -- when a scheduled broadcast starts
    paused_from                  text,          -- the status resume returns to
    resolved_at                  timestamptz,   -- the audience is frozen in broadcast_recipients
    template_versions            jsonb,         -- template id -> version, pinned at start
    finished_at                  timestamptz,   -- delivery.finished_at
    deleted_at                   timestamptz,
    PRIMARY KEY (workspace_id, id)
);
-- broadcasts.list: newest first, live ones.
CREATE INDEX broadcasts_created ON broadcasts (workspace_id, created_at DESC, id) WHERE deleted_at IS NULL;
-- The scheduler and the feeder: broadcasts that have work (a small set).
CREATE INDEX broadcasts_active ON broadcasts (status, start_at)
    WHERE deleted_at IS NULL AND status IN ('scheduled', 'processing', 'testing', 'test_completed', 'winner_selected',
                                            'processed');

-- One row per recipient, made at start. `rank` is the contract's rank key; `phase` single, test
-- or winner; `variation` the index into test_settings.variations (NULL while held); `state`
-- held, waiting, fed (its message decides queued / sent / failed), skipped or cancelled.
CREATE TABLE broadcast_recipients (
    workspace_id text NOT NULL,
    broadcast_id text NOT NULL,
    email        text NOT NULL,
    rank         bigint NOT NULL,
    phase        text NOT NULL,
    variation    smallint,
    state        text NOT NULL,
    send_after   timestamptz,
    message_id   text,
    PRIMARY KEY (workspace_id, broadcast_id, email),
    FOREIGN KEY (workspace_id, broadcast_id) REFERENCES broadcasts (workspace_id, id) ON DELETE CASCADE
);
-- The feeder takes waiting recipients in rank order.
CREATE INDEX broadcast_recipients_waiting ON broadcast_recipients (workspace_id, broadcast_id, rank, email)
    WHERE state = 'waiting';

-- The class of a message's final failure (delivery-contract 2.8: recipient, message, provider,
-- deferred, throttled; or expired): a broadcast retries the transient ones (retryFailed).
ALTER TABLE message_history ADD COLUMN failure_class text;
