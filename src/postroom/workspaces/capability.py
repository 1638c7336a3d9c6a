"""The workspaces capability's manifest: workspaces and their API keys."""

from postroom.platform.capability import Capability
from postroom.workspaces import api, openapi

CAPABILITY = Capability("workspaces", endpoints=api.ENDPOINTS, operations=openapi.OPERATIONS,
                        schemas=openapi.SCHEMAS)
