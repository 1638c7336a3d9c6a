"""Bulk import rules: one operation per input row, duplicates folded in order, CSV cells as values.

Pure: no I/O. The field rules themselves (validation, merge, diff, wire form) are model.py's;
this module only says how a batch of rows uses them:

- every input row gets one operation, in input order: `create`, `update` or `error` (with the
  row's email when it has one, normalised, and the model's message);
- rows that share an email are applied one after another: the first applied one reports
  `create` (or `update` when the contact existed), the later ones `update`, and the stored
  contact is `model.merge` applied row after row (`fold`);
- a CSV cell is text: empty means absent, and numbers and JSON are read from it per field kind.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from postroom.contacts import model

CREATE, UPDATE, ERROR = "create", "update", "error"


# ---------------------------------------------------------------- one operation per row

def row_email(raw) -> str:
    """The email an operation reports for an input row: normalised if the row has one as a
    string (even an invalid one), else ""."""
    if isinstance(raw, Mapping):
        value = raw.get("email")
        if isinstance(value, str):
            return model.normalize_email(value)
    return ""


class Batch:
    """Input rows in input order: their operations, and the valid ones grouped by email.

    `ops[i]` is the operation of row i: `{"email", "action"}` plus `"error"` for a rejected row.
    The action of a valid row is None until the write tells whether its contact existed
    (`applied`) or the database refused it (`failed`).

    Rows are validated when added (`add`), or later (`defer`, then `validate` per email): a
    request's rows are then grouped by the email they name first, and each email's rows are
    validated just before they are written, while the database writes another chunk.
    The outcome is the same either way.
    """

    def __init__(self) -> None:
        self.ops: list[dict] = []
        # email -> [(row index, parsed contact), ...] in input order
        self.groups: dict[str, list[tuple[int, dict]]] = {}
        # email -> [(row index, raw row), ...] not validated yet, in input order
        self._deferred: dict[str, list[tuple[int, object]]] = {}

    def __len__(self) -> int:
        return len(self.ops)

    def add(self, raw) -> bool:
        """Validates one input row with the import rules (null keeps the stored value) and
        records it; returns False when the row was rejected."""
        try:
            incoming = model.parse_contact_for_import(raw)
        except model.ContactError as exc:
            self.reject(row_email(raw), exc.message)
            return False
        self.accept(incoming)
        return True

    def accept(self, incoming: dict) -> None:
        """Records a row already parsed by model.parse_contact_for_import."""
        email = incoming["email"]
        self.groups.setdefault(email, []).append((len(self.ops), incoming))
        self.ops.append({"email": email, "action": None})

    def reject(self, email: str, message: str) -> None:
        self.ops.append({"email": email, "action": ERROR, "error": message})

    def defer(self, raw) -> None:
        """Records one input row, to be validated by `validate(email)` with the other rows that
        name the same email. A row naming no email (or not an object) is refused at once."""
        email = row_email(raw)
        if not email:
            self.add(raw)  # a rejection: the model says why (email missing, not a string, ...)
            return
        self._deferred.setdefault(email, []).append((len(self.ops), raw))
        self.ops.append({"email": email, "action": None})

    def validate(self, email: str) -> bool:
        """Validates the deferred rows that name `email`, in input order, as `add` would have;
        returns whether the email has valid rows (and so something to write)."""
        rows = self._deferred.pop(email, None)
        if rows is not None:
            group = self.groups.get(email)
            mixed = bool(group)
            for index, raw in rows:
                try:
                    incoming = model.parse_contact_for_import(raw)
                except model.ContactError as exc:
                    self.ops[index]["action"] = ERROR
                    self.ops[index]["error"] = exc.message
                    continue
                if group is None:
                    group = self.groups[email] = []
                group.append((index, incoming))  # incoming["email"] == email: row_email normalises alike
            if mixed:
                group.sort(key=lambda item: item[0])
        return email in self.groups

    def keys(self) -> list[str]:
        """The distinct emails the rows name, validated or not, in order of first appearance
        (for rows added with `add`, those of valid rows only: `emails`)."""
        if not self._deferred:
            return list(self.groups)
        return list(dict.fromkeys([*self.groups, *self._deferred]))

    def emails(self) -> list[str]:
        """The distinct valid emails, in order of first appearance (deferred rows not counted
        until validated)."""
        return list(self.groups)

    def incoming(self, email: str) -> list[dict]:
        """The parsed rows of one email, in input order."""
        return [row for _, row in self.groups[email]]

    def applied(self, email: str, existed: bool) -> None:
        """The rows of `email` were written: the first is a create unless the contact existed."""
        action = UPDATE if existed else CREATE
        for index, _ in self.groups[email]:
            self.ops[index]["action"] = action
            action = UPDATE

    def failed(self, email: str, message: str) -> None:
        """The database refused the contact: every row of that email is an error."""
        for index, _ in self.groups[email]:
            self.ops[index] = {"email": email, "action": ERROR, "error": message}

    def counts(self) -> dict[str, int]:
        """Rows by outcome: {"created", "updated", "failed"} (duplicates count once per row)."""
        out = {"created": 0, "updated": 0, "failed": 0}
        names = {CREATE: "created", UPDATE: "updated", ERROR: "failed"}
        for op in self.ops:
            name = names.get(op["action"])
            if name:
                out[name] += 1
        return out


def chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------- folding and side effects

def fold(existing: Mapping | None, incoming: Iterable[Mapping], now: _dt.datetime) -> dict:
    """The stored contact after applying the rows one after another with model.merge
    (existing None: the first row creates it)."""
    row = existing
    for one in incoming:
        row = model.merge(row, one, now)
    if row is None:
        raise ValueError("fold needs at least one row")
    return row


# ---------------------------------------------------------------- CSV cells

def _err(detail: str) -> model.ContactError:
    return model.ContactError("invalid contact: " + detail)


def _echo(text: str) -> str:
    return text if len(text) <= 50 else text[:50] + "..."


_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode


def cell_value(field: str, text: str):
    """One CSV cell as the JSON value its field takes, for model.parse_contact_for_import.

    Blank (empty or only whitespace) means absent and returns None here; a number field reads
    a decimal number, orders_count an integer (a fraction is left to the model to refuse),
    custom_json_N reads JSON text; everything else (strings, times, email) is passed as text.
    Raises ContactError for text that is not a number or not JSON.
    """
    stripped = text.strip()
    if not stripped:
        return None
    if field in model.NUMBER_FIELDS or field in model.INTEGER_FIELDS:
        if field in model.INTEGER_FIELDS and _INTEGER_TEXT.fullmatch(stripped):
            return int(stripped)
        if _NUMBER_TEXT.fullmatch(stripped):
            return float(stripped)  # 1e999 -> inf, which the model refuses as not finite
        kind = "integer" if field in model.INTEGER_FIELDS else "number"
        raise _err(f'invalid {kind} for {field}: "{_echo(stripped)}"')
    if field in model.JSON_FIELDS:
        try:
            return _json_decode(stripped)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise _err(f"invalid JSON text for {field}: {exc}") from None
    return text


def cell_text(field: str, value) -> str:
    """A field's wire value (from model.to_wire) as a CSV cell; cell_value reads it back."""
    if value is None:
        return ""
    if field in model.JSON_FIELDS:
        return _json_encode(value).decode()
    if isinstance(value, str):
        return value
    return repr(value)  # int or float: repr round-trips a float exactly


class CsvColumns:
    """A CSV header of field names, and how to read a row of cells under it.

    Columns that name no field are ignored (as unknown keys are); `unknown` lists them.
    """

    def __init__(self, header: Sequence[str]):
        self.header = list(header)
        names = [name.strip() for name in header]
        self.width = len(names)
        seen: set[str] = set()
        known: dict[str, int] = {}
        self.unknown: list[str] = []
        for index, name in enumerate(names):
            if name in seen:
                raise ValueError(f"column appears twice in the header: {name}")
            seen.add(name)
            if name in model.FIELDS:
                known[name] = index
            else:
                self.unknown.append(name)
        if "email" not in known:
            raise ValueError("the header has no email column")
        # in the model's field order, so that the first failure is the one upsert would report
        self._plan = tuple((f, known[f]) for f in model.FIELDS if f in known)
        self._email_index = known["email"]

    def email(self, cells: Sequence[str]) -> str:
        """The row's email for its operation, normalised ("" when the cell is missing)."""
        if self._email_index < len(cells):
            return model.normalize_email(cells[self._email_index])
        return ""

    def contact(self, cells: Sequence[str]) -> dict:
        """The row as a raw contact (values typed per field); raises ContactError.

        When a cell cannot be read, an earlier field's model error wins over it, as the
        model reports the first failure in field order.
        """
        if len(cells) > self.width:
            raise _err(f"the row has {len(cells)} cells but the header names {self.width} columns")
        raw: dict = {}
        n = len(cells)
        for field, index in self._plan:
            if index >= n:
                continue
            try:
                value = cell_value(field, cells[index])
            except model.ContactError:
                model.parse_contact_for_import(raw)  # raises an earlier field's error, if any
                raise
            if value is not None:
                raw[field] = value
        return raw


def parse_json_line(line: str | bytes):
    """One line of a JSON Lines file, decoded; raises ContactError when it is not JSON."""
    try:
        return _json_decode(line)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise model.ContactError(f"invalid JSON line: {exc}") from None
