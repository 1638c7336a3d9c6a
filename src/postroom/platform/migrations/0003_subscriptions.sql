-- Subscriptions: per-workspace secrets (sealed) and the public subscribe rate-limit counters.

-- Secrets of a workspace (the key behind confirmation links, ...), one row per purpose.
-- `sealed` is postroom.platform.secrets' form: AES-256-GCM under a key derived from SECRET_KEY
-- with HKDF; the associated data names (workspace_id, name), so it only opens in its own row.
-- Deleting a row rotates the secret: links signed with the old one stop working.
CREATE TABLE workspace_secrets (
    workspace_id text NOT NULL,
    name         text NOT NULL,
    sealed       bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, name)
);

-- One counter per (workspace, bucket) for the current fixed window; a hit in a later window
-- restarts it at 1. Buckets are "email:<address>" and "ip:<address>". Counted here, with one
-- atomic upsert per attempt, so every API process shares the limits.
CREATE TABLE subscribe_rate_limits (
    workspace_id text NOT NULL,
    bucket       text NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL,
    PRIMARY KEY (workspace_id, bucket)
);
-- For the sweep of windows long gone.
CREATE INDEX subscribe_rate_limits_window ON subscribe_rate_limits (workspace_id, window_start);

