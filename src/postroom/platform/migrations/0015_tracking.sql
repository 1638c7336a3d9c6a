-- Open and click tracking (engagement contract 1.9): every recorded click per link of a message.
-- opened_at / clicked_at stay on message_history (set once); this table counts every click, by
-- the link's 0-based index among the tracked links of the message (carried in its token).
-- broadcast_id is copied from the message so a broadcast's per-link figures read one index.
CREATE TABLE message_link_clicks (
    workspace_id     text NOT NULL,
    message_id       text NOT NULL,
    link_index       integer NOT NULL CHECK (link_index >= 0),
    broadcast_id     text,
    url              text NOT NULL,
    clicks           bigint NOT NULL CHECK (clicks > 0),
    first_clicked_at timestamptz NOT NULL,
    last_clicked_at  timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, message_id, link_index),
    FOREIGN KEY (workspace_id, message_id) REFERENCES message_history (workspace_id, id) ON DELETE CASCADE
);
-- messages.broadcastLinkStats
CREATE INDEX message_link_clicks_broadcast ON message_link_clicks (workspace_id, broadcast_id, link_index)
    WHERE broadcast_id IS NOT NULL;
