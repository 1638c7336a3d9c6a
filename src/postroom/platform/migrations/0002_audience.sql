-- Audience: lists, list memberships (contact_lists) and segment memberships.

CREATE TABLE lists (
    workspace_id     text NOT NULL,
    id               text NOT NULL,
    name             text NOT NULL,
    is_double_optin  boolean NOT NULL DEFAULT false,
    is_public        boolean NOT NULL DEFAULT false,
    description      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    PRIMARY KEY (workspace_id, id)
);

-- A membership removed from its list keeps its row with deleted_at set (history, stats).
CREATE TABLE contact_lists (
    workspace_id  text NOT NULL,
    list_id       text NOT NULL,
    email         text NOT NULL,
    status        text NOT NULL CHECK (status IN ('active', 'pending', 'unsubscribed', 'bounced', 'complained')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    PRIMARY KEY (workspace_id, list_id, email)
);
CREATE INDEX contact_lists_email ON contact_lists (workspace_id, email);

-- Filled by segmentation once segments exist; read by contacts.getByEmail and the segments[] filter.
CREATE TABLE contact_segments (
    workspace_id  text NOT NULL,
    segment_id    text NOT NULL,
    email         text NOT NULL,
    matched_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, segment_id, email)
);
CREATE INDEX contact_segments_email ON contact_segments (workspace_id, email);
