"""The broadcasts capability's manifest: the broadcast endpoints and the broadcast loop (scheduler
and feeder) of every process that runs workers."""

from __future__ import annotations

from postroom.broadcasts import api, openapi, sending, tasks_api
from postroom.platform.capability import Capability

CAPABILITY = Capability("broadcasts", endpoints=[*api.ENDPOINTS, *tasks_api.ENDPOINTS], operations=openapi.OPERATIONS, schemas=openapi.SCHEMAS,
                        loops=[sending.start])
