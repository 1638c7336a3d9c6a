-- Templates: append-only versions, one head row per template, and saved template blocks.
-- Like the other workspace tables (and unlike user_workspaces), no foreign key to workspaces:
-- the rows are sharded by workspace_id, the workspaces table is not.

-- One row per version; a version is never changed after it is written, except deleted_at, which
-- a delete sets on every version at once. email, web and translations hold the parts as
-- templates.model stores them (compiled_preview included).
CREATE TABLE templates (
    workspace_id       text NOT NULL,
    id                 text NOT NULL,
    version            integer NOT NULL,
    name               text NOT NULL,
    channel            text NOT NULL,
    category           text NOT NULL,
    email              jsonb,
    web                jsonb,
    template_macro_id  text,
    integration_id     text,
    test_data          jsonb,
    settings           jsonb,
    translations       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    deleted_at         timestamptz,
    PRIMARY KEY (workspace_id, id, version)
);

-- One row per template, ids of deleted templates included (an id is never reused). An update
-- locks it FOR UPDATE, so the versions of one template are written one after the other; it
-- carries what templates.list filters and orders by, so the list reads this table's index and
-- then one version per template.
CREATE TABLE template_heads (
    workspace_id    text NOT NULL,
    id              text NOT NULL,
    latest_version  integer NOT NULL,
    category        text NOT NULL,
    channel         text NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX template_heads_order ON template_heads (workspace_id, updated_at DESC, id) WHERE deleted_at IS NULL;

ALTER TABLE templates ADD FOREIGN KEY (workspace_id, id) REFERENCES template_heads (workspace_id, id);

-- Saved fragments of visual trees; seq gives the creation order (the order the builder lists them).
CREATE TABLE template_blocks (
    workspace_id  text NOT NULL,
    id            uuid NOT NULL,
    name          text NOT NULL,
    block         jsonb NOT NULL,
    created       timestamptz NOT NULL,
    updated       timestamptz NOT NULL,
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX template_blocks_order ON template_blocks (workspace_id, seq);
