"""The delivery capability's manifest: the message history and integration endpoints, the send
loop, the double opt-in confirmation loop (an outbox consumer), the SMTP bridge, and the queue
depths /metrics reports."""

from __future__ import annotations

import sys

from prometheus_client.core import GaugeMetricFamily

from postroom.delivery import api, openapi, store, transactional_api
from postroom.events import dispatch
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


def start_confirmations(pool, settings, stop):
    from postroom.delivery import confirmations

    return confirmations.start(pool, settings, stop)


def queue_depth(row):
    gauge = GaugeMetricFamily("postroom_email_queue_rows", "Email queue rows by state.", labels=("status",))
    for status in ("pending", "processing", "failed", "paused"):
        gauge.add_metric((status,), row[status])
    yield gauge


# list.pending events whose confirmation is not queued yet (the consumer's partial index).
CONFIRMATIONS_PENDING = f"SELECT count(*) AS n FROM events WHERE {dispatch.CONSUMERS['confirmations'].unconsumed()}"


def confirmations_pending(row):
    yield GaugeMetricFamily("postroom_confirmations_pending",
                            "Double opt-in confirmations waiting to be queued (list.pending events not consumed).",
                            value=row["n"])


CAPABILITY = Capability("delivery", endpoints=[*api.ENDPOINTS, *transactional_api.ENDPOINTS], operations=openapi.OPERATIONS, schemas=openapi.SCHEMAS,
                        loops=[start_loops, start_confirmations], servers=[start_bridge],
                        probes=[Probe(store.QUEUE_DEPTH, queue_depth), Probe(CONFIRMATIONS_PENDING, confirmations_pending)])
