"""The templates capability's manifest: templates, their versions and translations, compile, and
template blocks."""

from __future__ import annotations

from postroom.platform.capability import Capability
from postroom.templates import api, openapi

CAPABILITY = Capability("templates", endpoints=api.ENDPOINTS, operations=openapi.OPERATIONS, schemas=openapi.SCHEMAS)
