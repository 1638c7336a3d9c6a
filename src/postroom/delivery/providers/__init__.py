"""The seven email providers, one module each (delivery-contract section 2). `KINDS` names the
module of each kind; `load(kind)` imports it on first use, so a process loads only the providers
its integrations use."""

from __future__ import annotations

import importlib

KINDS = ("smtp", "ses", "postmark", "mailgun", "mailjet", "sendgrid", "sparkpost")


def load(kind: str):
    if kind not in KINDS:
        raise KeyError(kind)
    return importlib.import_module(f"{__name__}.{kind}")
