-- The members of a list in contacts.list order (created_at DESC, email), from an index.
--
-- contacts.list?list_id=... used to walk the contacts in list order (contacts_created) and keep
-- the members: fast when members are spread over the workspace, a walk of every newer
-- non-member when they are not (a list of old contacts: ~1 s at a million contacts). So each
-- membership carries its contact's created_at, and the list is read from its own index.
--
-- contact_created_at is a copy of contacts.created_at, on every membership row, removed ones
-- included (a revived membership is then right as it stands). It is written by the statement
-- that writes the membership (lists.store, from the contact row) and moved, in the transaction
-- that changes a contact's created_at, by lists.store.sync_contact_created_at.

-- A membership whose contact is gone is what contacts.delete would have removed with the
-- contact (it can only be left over from a subscription racing a delete): it goes now, as it
-- would have then. Every membership left has a contact to take created_at from.
DELETE FROM contact_lists cl
 WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.workspace_id = cl.workspace_id AND c.email = cl.email);

-- Added without a default (no table rewrite), filled by one join, then required.
ALTER TABLE contact_lists ADD COLUMN contact_created_at timestamptz;

UPDATE contact_lists cl SET contact_created_at = c.created_at
  FROM contacts c
 WHERE c.workspace_id = cl.workspace_id AND c.email = cl.email;

ALTER TABLE contact_lists ALTER COLUMN contact_created_at SET NOT NULL;

-- Status is part of the key so that a contact_list_status filter reads only its own entries; a
-- page of any status merges the five statuses' runs (contacts.store, one index scan each), which
-- costs five descents instead of a second index on every membership write.
CREATE INDEX contact_lists_order ON contact_lists
    (workspace_id, list_id, status, contact_created_at DESC, email)
    WHERE deleted_at IS NULL;
