"""AiMesh: a message queue and gateway for AI agents.

Embedded use::

    from aimesh import AiMesh, AiMeshConfig, AIMessage, EndpointMetrics, HealthStatus
    mesh = AiMesh(AiMeshConfig())
    mesh.router.register_endpoint(EndpointMetrics(endpoint_id="gpt-4", capacity=1000, ...))
    decision = mesh.router.route(AIMessage(agent_id="my-agent", payload=b"hi"))

Client use::

    from aimesh import AiMeshClient, Message
    ack = AiMeshClient("http://localhost:9000").send_message(Message(agent_id="a", payload=b"hi"))
"""

from aimesh import _native
from aimesh.client import AiMeshClient, AsyncAiMeshClient
from aimesh.config import AiMeshConfig
from aimesh.errors import (
    AiMeshError,
    AuthenticationError,
    BudgetExceededError,
    ConflictError,
    FrameError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QueueFullError,
    RateLimitError,
    RoutingError,
    ServiceUnavailableError,
    UpstreamError,
    ValidationError,
)
from aimesh.mesh import AiMesh
from aimesh.models import (
    Acknowledgment,
    AckStatus,
    AIMessage,
    BudgetInfo,
    EndpointMetrics,
    HealthStatus,
    Message,
)
from aimesh.router import Router, RoutingDecision, RoutingScore

__version__: str = _native.__version__

__all__ = [
    "AIMessage",
    "AckStatus",
    "Acknowledgment",
    "AiMesh",
    "AiMeshClient",
    "AiMeshConfig",
    "AiMeshError",
    "AsyncAiMeshClient",
    "AuthenticationError",
    "BudgetExceededError",
    "BudgetInfo",
    "ConflictError",
    "EndpointMetrics",
    "FrameError",
    "HealthStatus",
    "Message",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QueueFullError",
    "RateLimitError",
    "Router",
    "RoutingDecision",
    "RoutingError",
    "RoutingScore",
    "ServiceUnavailableError",
    "UpstreamError",
    "ValidationError",
    "__version__",
]
