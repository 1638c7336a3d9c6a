"""The lists capability's manifest: lists.*, contactLists.*, and the public /subscribe and /confirm."""

from postroom.lists import api, openapi
from postroom.platform.capability import Capability

CAPABILITY = Capability("lists", endpoints=api.ENDPOINTS, routes=api.ROUTES, operations=openapi.OPERATIONS,
                        paths=openapi.PATHS, schemas=openapi.SCHEMAS)
