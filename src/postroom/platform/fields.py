"""The checks every capability applies to a string field of a request. Pure: no I/O.

Each check returns the value it was given (trimmed, where it trims) and raises error(message) on a
refusal: a 400 RuleError by default, or the caller's subclass (ContactError, ListError, ...)
or any callable that makes the exception from the message. `name` is the field as the message
names it, with any prefix the capability puts before it ("invalid create list request: name").

The wording of a refusal is part of the wire contract and differs between capabilities (as it
does in Notifuse), so the NUL and length checks take it as a template of `name` and `limit`.
"""

from __future__ import annotations

from typing import Callable

from postroom.platform.errors import RuleError

Error = Callable[[str], Exception]

# PostgreSQL text cannot hold NUL: refused here, never by the database.
NUL_IN_FIELD = "{name} contains a NUL character"            # a body field
NUL_IN_PARAM = "invalid {name}: contains a NUL character"   # a query parameter, a key looked up

EXCEEDS = "{name} exceeds {limit} characters"
AT_MOST = "{name} must be at most {limit} characters"
BETWEEN = "{name} length must be between 1 and {limit}"


def string(value, name: str, error: Error = RuleError) -> str:
    """`value` when it is a str; any other type is `<name> must be a string`."""
    if not isinstance(value, str):
        raise error(f"{name} must be a string")
    return value


def required_string(value, name: str, error: Error = RuleError, missing: str | None = None) -> str:
    """A str that is not empty: None or "" is `missing` (`<name> is required` by default)."""
    if value is None or value == "":
        raise error(missing or f"{name} is required")
    return string(value, name, error)


def trimmed_string(value, name: str, error: Error = RuleError) -> str:
    """required_string trimmed of Unicode whitespace; blank is `<name> is required` too."""
    s = required_string(value, name, error).strip()
    if not s:
        raise error(f"{name} is required")
    return s


def without_nul(value: str, name: str, error: Error = RuleError, wording: str = NUL_IN_FIELD) -> str:
    if "\x00" in value:
        raise error(wording.format(name=name))
    return value


def at_most(value: str, name: str, limit: int, error: Error = RuleError, wording: str = EXCEEDS) -> str:
    """`value` when it has at most `limit` characters."""
    if len(value) > limit:
        raise error(wording.format(name=name, limit=limit))
    return value


def text(value, name: str, limit: int, error: Error = RuleError, wording: str = EXCEEDS) -> str:
    """A required name-like field: trimmed_string, without NUL, at most `limit` characters."""
    return at_most(without_nul(trimmed_string(value, name, error), name, error), name, limit, error, wording)


# ---------------------------------------------------------------- emails

def normalize_email(value: str) -> str:
    """Trimmed of Unicode whitespace and lower-cased: the stored form and the lookup key."""
    return value.strip().lower()


def email_key(value, missing: str = "email is required", error: Error = RuleError) -> str:
    """An email naming a contact to look up, normalised like stored emails: None, "" or blank is
    `missing`, a NUL `invalid email: contains a NUL character` (its format is not checked: an
    email that cannot exist finds nothing)."""
    email = normalize_email(required_string(value, "email", error, missing))
    if not email:
        raise error(missing)
    return without_nul(email, "email", error, NUL_IN_PARAM)
