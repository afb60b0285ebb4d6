"""Delivery to upstream model endpoints: adapters (``openai``, ``http``),
circuit breakers and the :class:`~aimesh.endpoints.delivery.Deliverer` that
walks a routing decision's fallback chain."""

from aimesh.endpoints.base import (
    ClientGone,
    DeliveryRequest,
    DeliveryResult,
    EndpointFailure,
    StreamSink,
)

__all__ = ["ClientGone", "DeliveryRequest", "DeliveryResult", "EndpointFailure", "StreamSink"]
