"""The delivery capability's manifest: the message history and integration endpoints, the send
loop, and the queue depth /metrics reports."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from postroom.delivery import api, openapi, store, transactional_api
from postroom.platform.capability import Capability, Probe


def start_loops(pool, settings, stop):
    from postroom.delivery import worker  # the providers' clients load only where the loop runs

    return worker.start(pool, settings, stop)


def queue_depth(row):
    gauge = GaugeMetricFamily("postroom_email_queue_rows", "Email queue rows by state.", labels=("status",))
    for status in ("pending", "processing", "failed", "paused"):
        gauge.add_metric((status,), row[status])
    yield gauge


CAPABILITY = Capability("delivery", endpoints=[*api.ENDPOINTS, *transactional_api.ENDPOINTS], operations=openapi.OPERATIONS, schemas=openapi.SCHEMAS,
                        loops=[start_loops], probes=[Probe(store.QUEUE_DEPTH, queue_depth)])
