"""The one base of every error a client can cause, rendered by the edge in one place.

    RuleError(message, status=400, headers=None)     -> {"error": message} with that status
     ├── auth.model.AuthError                         401/403: tokens, memberships, permissions
     ├── workspaces.model.WorkspaceError              400: workspace ids, names, key prefixes
     ├── contacts.model.ContactError                  400: a contact's fields
     ├── lists.model.ListError                        400/404: lists, memberships, links
     ├── customevents.model.CustomEventError          400: custom events, their imports and lists
     ├── webhooks.model.WebhookError                  400/404: subscriptions, destinations
     ├── templates.model.TemplateError                400/404: templates, template blocks
     └── (raised as is)                               the edge's own checks and handlers' 404/409

A model raises its subclass without knowing HTTP; `platform.http.Edge` turns any RuleError that
reaches it into the JSON answer. It subclasses ValueError: a rule error is a refused value, and
code that reads values (imports row by row, the CLI) catches it as one.
"""

from __future__ import annotations


class RuleError(ValueError):
    """A request the rules refuse: `.message` is the whole text the client gets."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers or {}
