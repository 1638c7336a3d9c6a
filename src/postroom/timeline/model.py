"""A timeline entry on the wire, close to Notifuse's timeline entries. Pure: no I/O.

    {"id": "123",                      # string, like Notifuse's
     "email": "a@example.com",
     "operation": "insert" | "update" | "delete",
     "entity_type": "contact" | "contact_list" | ...,
     "kind": "contact.created",        # the event type recorded (also the outbox event's type)
     "entity_id": "...",               # omitted when there is none
     "changes": {"field": {"old": .., "new": ..}} | null,
     "created_at": "2024-01-01T10:00:00.123456Z"}

Notifuse's `kind` is `<operation>_<entity_type>` (`insert_contact`); ours is the event type the
entry was recorded under, and `operation` is derived from it (see operation_of).
"""

from __future__ import annotations

from postroom.platform.times import format_time

# The last word of a kind that says its operation (segment.joined / segment.left: segments-contract).
INSERT_VERBS = ("created", "subscribed", "joined")
DELETE_VERBS = ("deleted", "removed", "left")


def operation_of(kind: str) -> str:
    """`contact.created`/`list.subscribed` -> insert, `*.deleted`/`list.removed` -> delete,
    every other change of state (updated, unsubscribed, bounced, confirmed...) -> update. Kinds in
    Notifuse's `<operation>_<entity>` form (the message history's `insert_message_history`) say
    their operation first."""
    if "." not in kind and kind.partition("_")[0] in ("insert", "update", "delete"):
        return kind.partition("_")[0]
    verb = kind.rpartition(".")[2]
    if verb in INSERT_VERBS:
        return "insert"
    if verb in DELETE_VERBS:
        return "delete"
    return "update"


def entry_operation(row) -> str:
    """The operation of a stored entry. A custom event's kind is `custom_event.<event_name>` whatever
    happened (and a name may end in `.created`), so its changes tell: an insert's name the key
    (external_id), an update's never do."""
    if row["entity_type"] == "custom_event":
        return "insert" if row["changes"] and "external_id" in row["changes"] else "update"
    return operation_of(row["kind"])


def entry_wire(row) -> dict:
    entry = {"id": str(row["id"]), "email": row["email"], "operation": entry_operation(row),
             "entity_type": row["entity_type"], "kind": row["kind"]}
    if row["entity_id"] is not None:
        entry["entity_id"] = row["entity_id"]
    entry["changes"] = row["changes"]
    entry["created_at"] = format_time(row["created_at"])  # as contacts and cursors write it
    return entry
