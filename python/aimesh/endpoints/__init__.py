"""Delivery to upstream model endpoints: adapters (``openai``, ``http``),
circuit breakers and the :class:`~aimesh.endpoints.delivery.Deliverer` that
walks a routing decision's fallback chain."""

from aimesh.endpoints.base import DeliveryRequest, DeliveryResult, EndpointFailure

__all__ = ["DeliveryRequest", "DeliveryResult", "EndpointFailure"]
