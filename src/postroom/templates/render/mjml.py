"""MJML to HTML with `mrml` (4.2 step 8, 4.4), and its errors as the contract words them (4.7)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import mrml

from postroom.templates.render.liquid import position

# Includes are never resolved: no template can make the server read a file or fetch a URL
# (`mj-include` is an error). The rest is mrml's defaults: MJML's fonts, social icons from
# MJML's origin, comments kept.
_PARSER = mrml.ParserOptions(include_loader=mrml.noop_loader())
_RENDER = mrml.RenderOptions()

_POSITION_RE = re.compile(r" at position (\d+):(\d+)")


@dataclass(frozen=True)
class MjmlProblem:
    line: int  # 1-based, 0 when the engine gives no position
    column: int
    reason: str

    @property
    def summary(self) -> str:
        return f"{self.reason} at line {self.line}, column {self.column}" if self.line else self.reason


class MjmlFailure(Exception):
    def __init__(self, problem: MjmlProblem):
        super().__init__(problem.summary)
        self.problem = problem


def _is_engine_failure(err: BaseException) -> bool:
    # mrml reports bad input as OSError; a panic inside the Rust code arrives as pyo3's
    # PanicException, which derives from BaseException. Either is the template's failure.
    return isinstance(err, Exception) or type(err).__name__ == "PanicException"


def problem_of(message: str, source: str) -> MjmlProblem:
    """`unexpected element in root template at position 6:15` → reason and 1-based line/column.

    mrml counts bytes of UTF-8; the contract counts characters.
    """
    found = _POSITION_RE.search(message)
    reason = _POSITION_RE.sub("", message).replace(" in root template", "").strip()
    if not found:
        return MjmlProblem(0, 0, reason)
    offset = int(found.group(1))
    index = len(source.encode("utf-8")[:offset].decode("utf-8", "ignore"))
    return MjmlProblem(*position(source, index), reason)


def to_html(source: str) -> str:
    """The HTML of an MJML document; raises MjmlFailure for a document mrml refuses."""
    try:
        return mrml.to_html(source, parser_options=_PARSER, render_options=_RENDER).content
    except BaseException as err:
        if not _is_engine_failure(err):
            raise
        raise MjmlFailure(problem_of(str(err), source)) from None
