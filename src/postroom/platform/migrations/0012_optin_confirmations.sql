-- Double opt-in confirmation emails: the list's own confirmation template, and the outbox
-- consumer that turns each list.pending event into one confirmation message (delivery's
-- confirmations loop; events.dispatch consumer "confirmations").

-- A template reference {"id": "<template id>", "version": <int, 0 = latest>}; NULL: the built-in
-- default confirmation email.
ALTER TABLE lists ADD COLUMN double_optin_template jsonb;

-- The consumer takes only list.pending events. Its partial index holds exactly the events it has
-- still to take, so the other events never cost it a write or an index entry. Events written
-- before this migration count as consumed: pending subscribers of an older version got their
-- link through webhooks, and an upgrade must not mail them all at once. (A constant default fills
-- existing rows without rewriting the table; it is dropped so that new events arrive unconsumed.)
ALTER TABLE events ADD COLUMN confirmations_consumed_at timestamptz DEFAULT '-infinity';
ALTER TABLE events ALTER COLUMN confirmations_consumed_at DROP DEFAULT;
CREATE INDEX events_confirmations_unconsumed ON events (workspace_id, id)
    WHERE confirmations_consumed_at IS NULL AND type = 'list.pending';
