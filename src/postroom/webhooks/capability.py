"""The webhooks capability's manifest: subscriptions, their loops (outbox dispatcher, delivery
worker) and the queue depths /metrics reports."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from postroom.platform.capability import Capability, Probe
from postroom.webhooks import api, openapi, store


def start_loops(pool, settings, stop):
    from postroom.webhooks import delivery  # its HTTP client loads only where the loops run

    return delivery.start(pool, settings, stop)


def queue_depths(row):
    yield GaugeMetricFamily("postroom_outbox_events_pending",
                            "Outbox events not yet fanned out to webhook subscriptions.", value=row["outbox"])
    queue = GaugeMetricFamily("postroom_webhook_deliveries_queued",
                              "Webhook deliveries waiting (pending) or being attempted (delivering).",
                              labels=("status",))
    queue.add_metric(("pending",), row["pending"])
    queue.add_metric(("delivering",), row["delivering"])
    yield queue


CAPABILITY = Capability("webhooks", endpoints=api.ENDPOINTS, operations=openapi.OPERATIONS, schemas=openapi.SCHEMAS,
                        loops=[start_loops], probes=[Probe(store.QUEUE_DEPTHS, queue_depths)])
