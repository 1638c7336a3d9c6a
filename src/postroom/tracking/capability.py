"""The tracking capability's manifest: the public /t/, /r/, /opens and /visit, and
messages.linkStats / messages.broadcastLinkStats."""

from postroom.platform.capability import Capability
from postroom.tracking import api, openapi

CAPABILITY = Capability("tracking", endpoints=api.ENDPOINTS, routes=api.ROUTES, operations=openapi.OPERATIONS,
                        paths=openapi.PATHS, schemas=openapi.SCHEMAS)
