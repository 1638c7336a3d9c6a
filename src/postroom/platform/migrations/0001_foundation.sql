-- Foundation: workspaces, users and their memberships, contacts, the contact timeline and the outbox.
-- Every workspace-scoped table leads its primary key and every index with workspace_id.

CREATE TABLE workspaces (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    settings    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text NOT NULL UNIQUE,
    name        text NOT NULL DEFAULT '',
    type        text NOT NULL CHECK (type IN ('user', 'api_key')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_sessions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_sessions_user ON user_sessions (user_id);

CREATE TABLE user_workspaces (
    workspace_id text NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('owner', 'member')),
    permissions  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX user_workspaces_user ON user_workspaces (user_id);

CREATE TABLE contacts (
    workspace_id      text NOT NULL,
    email             text NOT NULL,
    external_id       text,
    timezone          text,
    language          text,
    first_name        text,
    last_name         text,
    full_name         text,
    phone             text,
    address_line_1    text,
    address_line_2    text,
    country           text,
    postcode          text,
    state             text,
    job_title         text,
    lifetime_value    double precision,
    orders_count      bigint,
    last_order_at     timestamptz,
    custom_string_1   text,
    custom_string_2   text,
    custom_string_3   text,
    custom_string_4   text,
    custom_string_5   text,
    custom_number_1   double precision,
    custom_number_2   double precision,
    custom_number_3   double precision,
    custom_number_4   double precision,
    custom_number_5   double precision,
    custom_datetime_1 timestamptz,
    custom_datetime_2 timestamptz,
    custom_datetime_3 timestamptz,
    custom_datetime_4 timestamptz,
    custom_datetime_5 timestamptz,
    custom_json_1     jsonb,
    custom_json_2     jsonb,
    custom_json_3     jsonb,
    custom_json_4     jsonb,
    custom_json_5     jsonb,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, email)
);
CREATE INDEX contacts_external_id ON contacts (workspace_id, external_id, updated_at DESC)
    WHERE external_id IS NOT NULL;
CREATE INDEX contacts_created ON contacts (workspace_id, created_at DESC, email);

-- What happened to a contact, newest first by id.
CREATE TABLE contact_timeline (
    workspace_id text NOT NULL,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    email        text NOT NULL,
    kind         text NOT NULL,
    entity_type  text NOT NULL,
    entity_id    text,
    changes      jsonb,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX contact_timeline_email ON contact_timeline (workspace_id, email, id DESC);

-- The outbox: the one record that something happened. Written in the transaction of the change.
CREATE TABLE events (
    workspace_id text NOT NULL,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    type         text NOT NULL,
    subject      text,
    data         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (workspace_id, id)
);
