"""Parsing of a single query parameter, as every endpoint reads them. Pure: no Starlette, no I/O."""

from __future__ import annotations

from typing import Callable

from postroom.platform.errors import RuleError
from postroom.platform.fields import NUL_IN_PARAM, without_nul

REPEATED_PARAM = "invalid {}: given more than once"


def query_param(query, name: str) -> str | None:
    """The value of query parameter `name` (from starlette QueryParams); empty counts as absent.

    Given more than once is 400 `invalid <name>: given more than once`: which value was meant is
    not guessed (first-wins and last-wins readers, say a proxy and us, would disagree). A NUL
    character is 400 `invalid <name>: contains a NUL character` (PostgreSQL text cannot hold one).
    Every handler reads parameters through here (Call.param); contacts.list parses its many
    parameters itself (contacts.query) with the same rule and REPEATED_PARAM, and reads its one
    list parameter (segments) with every value.
    """
    return single_value(name, query.getlist(name))


def single_value(name: str, values: list[str], error: Callable[[str], Exception] = RuleError) -> str | None:
    """The rule of query_param over the values given for `name`, in order; a refusal is raised as
    error(message), a 400 RuleError by default (contacts.query raises its own QueryError)."""
    if not values:
        return None
    if len(values) > 1:
        raise error(REPEATED_PARAM.format(name))
    return without_nul(values[0], name, error, NUL_IN_PARAM) or None
