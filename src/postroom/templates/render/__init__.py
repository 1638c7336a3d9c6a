"""The one render path of email templates: a resolved variant plus data in, a finished email out.

Pure: no database, no HTTP. `render` is the function every sender calls (4.1); `tree`
validates and emits the visual editor's blocks, `liquid` holds the Liquid environment and its
limits, `mjml` the MJML engine, `links` and `text` the work on the final HTML, `tokens` the
signed open and click URLs, `once` the once-per-version rendering that keeps personalised sends
cheap.
"""

from postroom.templates.render.path import (
    Content,
    Options,
    RenderError,
    Result,
    check_liquid,
    clear_cache,
    compiled_preview,
    render,
)
from postroom.templates.render.tokens import Tracker, signed_tracking

__all__ = ["Content", "Options", "RenderError", "Result", "check_liquid", "clear_cache",
           "compiled_preview", "render", "Tracker", "signed_tracking"]
