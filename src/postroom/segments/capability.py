"""The segments capability's manifest: segments.*, the build loop and the outbox consumer."""

from postroom.platform.capability import Capability
from postroom.segments import api, openapi, worker

CAPABILITY = Capability("segments", endpoints=api.ENDPOINTS, operations=openapi.OPERATIONS, schemas=openapi.SCHEMAS,
                        loops=[worker.start])
