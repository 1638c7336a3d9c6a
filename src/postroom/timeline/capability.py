"""The timeline capability's manifest: timeline.list."""

from postroom.platform.capability import Capability
from postroom.timeline import api, openapi

CAPABILITY = Capability("timeline", endpoints=api.ENDPOINTS, operations=openapi.OPERATIONS, schemas=openapi.SCHEMAS)
