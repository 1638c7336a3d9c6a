"""The delivery capability's manifest: the message history and integration endpoints, the send
loop, the SMTP bridge, and the queue depth /metrics reports."""

from __future__ import annotations

import sys

from prometheus_client.core import GaugeMetricFamily

from postroom.delivery import api, openapi, store, transactional_api
from postroom.platform.capability import Capability, Probe


def start_loops(pool, settings, stop):
    from postroom.delivery import worker  # the providers' clients load only where the loop runs

    return worker.start(pool, settings, stop)


async def start_bridge(state):
    """The SMTP bridge (delivery-contract 6), when its settings enable it."""
    if not state.settings.smtp_bridge.enabled:
        return None
    from postroom.delivery import bridge  # aiosmtpd loads only where the bridge runs

    running = await bridge.start(state.pool, state.settings,
                                 state.settings.api_endpoint or state.public_url or "http://localhost")
    print(f"SMTP bridge listening on {running.host}:{running.port} ({bridge.TLS_LABELS[running.tls]})",
          file=sys.stderr, flush=True)
    return running


def queue_depth(row):
    gauge = GaugeMetricFamily("postroom_email_queue_rows", "Email queue rows by state.", labels=("status",))
    for status in ("pending", "processing", "failed", "paused"):
        gauge.add_metric((status,), row[status])
    yield gauge


CAPABILITY = Capability("delivery", endpoints=[*api.ENDPOINTS, *transactional_api.ENDPOINTS], operations=openapi.OPERATIONS, schemas=openapi.SCHEMAS,
                        loops=[start_loops], servers=[start_bridge], probes=[Probe(store.QUEUE_DEPTH, queue_depth)])
