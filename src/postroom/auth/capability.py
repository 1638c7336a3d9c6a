"""The auth capability's manifest: root sign-in."""

from postroom.auth import api, openapi
from postroom.platform.capability import Capability

CAPABILITY = Capability("auth", endpoints=api.ENDPOINTS, operations=openapi.OPERATIONS, schemas=openapi.SCHEMAS)
