"""The inbound capability's manifest: provider events (POST /webhooks/email), their listing, and
webhook registration."""

from postroom.inbound import api, openapi
from postroom.platform.capability import Capability

CAPABILITY = Capability("inbound", endpoints=api.ENDPOINTS, routes=api.ROUTES, operations=openapi.OPERATIONS,
                        paths=openapi.PATHS, schemas=openapi.SCHEMAS)
