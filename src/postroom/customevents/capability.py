"""The custom events capability's manifest: customEvents.*."""

from postroom.customevents import api, openapi
from postroom.platform.capability import Capability

CAPABILITY = Capability("customevents", endpoints=api.ENDPOINTS, operations=openapi.OPERATIONS,
                        schemas=openapi.SCHEMAS)
