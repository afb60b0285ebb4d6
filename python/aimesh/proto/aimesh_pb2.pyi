from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATUS_UNSPECIFIED: _ClassVar[HealthStatus]
    HEALTH_STATUS_HEALTHY: _ClassVar[HealthStatus]
    HEALTH_STATUS_DEGRADED: _ClassVar[HealthStatus]
    HEALTH_STATUS_UNHEALTHY: _ClassVar[HealthStatus]

class AckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_STATUS_UNSPECIFIED: _ClassVar[AckStatus]
    ACK_STATUS_RECEIVED: _ClassVar[AckStatus]
    ACK_STATUS_PROCESSED: _ClassVar[AckStatus]
    ACK_STATUS_FAILED: _ClassVar[AckStatus]
    ACK_STATUS_DUPLICATE: _ClassVar[AckStatus]
    ACK_STATUS_REJECTED: _ClassVar[AckStatus]

class StreamKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_KIND_UNSPECIFIED: _ClassVar[StreamKind]
    STREAM_KIND_MESSAGES: _ClassVar[StreamKind]
    STREAM_KIND_BATCHES: _ClassVar[StreamKind]

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_PENDING: _ClassVar[TaskStatus]
    TASK_STATUS_RUNNING: _ClassVar[TaskStatus]
    TASK_STATUS_COMPLETED: _ClassVar[TaskStatus]
    TASK_STATUS_FAILED: _ClassVar[TaskStatus]
    TASK_STATUS_CANCELLED: _ClassVar[TaskStatus]
    TASK_STATUS_COMPENSATING: _ClassVar[TaskStatus]
    TASK_STATUS_COMPENSATED: _ClassVar[TaskStatus]
HEALTH_STATUS_UNSPECIFIED: HealthStatus
HEALTH_STATUS_HEALTHY: HealthStatus
HEALTH_STATUS_DEGRADED: HealthStatus
HEALTH_STATUS_UNHEALTHY: HealthStatus
ACK_STATUS_UNSPECIFIED: AckStatus
ACK_STATUS_RECEIVED: AckStatus
ACK_STATUS_PROCESSED: AckStatus
ACK_STATUS_FAILED: AckStatus
ACK_STATUS_DUPLICATE: AckStatus
ACK_STATUS_REJECTED: AckStatus
STREAM_KIND_UNSPECIFIED: StreamKind
STREAM_KIND_MESSAGES: StreamKind
STREAM_KIND_BATCHES: StreamKind
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_PENDING: TaskStatus
TASK_STATUS_RUNNING: TaskStatus
TASK_STATUS_COMPLETED: TaskStatus
TASK_STATUS_FAILED: TaskStatus
TASK_STATUS_CANCELLED: TaskStatus
TASK_STATUS_COMPENSATING: TaskStatus
TASK_STATUS_COMPENSATED: TaskStatus

class AIMessage(_message.Message):
    __slots__ = ("agent_id", "message_id", "payload", "estimated_cost_tokens", "budget_tokens", "deadline_ms", "task_graph_id", "dependencies", "priority", "dedup_context", "trace_id", "metadata", "timestamp")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    TASK_GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEDUP_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    message_id: str
    payload: bytes
    estimated_cost_tokens: int
    budget_tokens: int
    deadline_ms: int
    task_graph_id: str
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    priority: int
    dedup_context: str
    trace_id: str
    metadata: _containers.ScalarMap[str, str]
    timestamp: int
    def __init__(self, agent_id: _Optional[str] = ..., message_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., estimated_cost_tokens: _Optional[int] = ..., budget_tokens: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., task_graph_id: _Optional[str] = ..., dependencies: _Optional[_Iterable[str]] = ..., priority: _Optional[int] = ..., dedup_context: _Optional[str] = ..., trace_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[AIMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[AIMessage, _Mapping]]] = ...) -> None: ...

class Acknowledgment(_message.Message):
    __slots__ = ("original_message_id", "status", "tokens_used", "processing_latency_ms", "endpoint_id", "error", "result", "error_code", "retry_after_s", "trace_id")
    ORIGINAL_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_USED_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    original_message_id: str
    status: AckStatus
    tokens_used: int
    processing_latency_ms: float
    endpoint_id: str
    error: str
    result: bytes
    error_code: str
    retry_after_s: float
    trace_id: str
    def __init__(self, original_message_id: _Optional[str] = ..., status: _Optional[_Union[AckStatus, str]] = ..., tokens_used: _Optional[int] = ..., processing_latency_ms: _Optional[float] = ..., endpoint_id: _Optional[str] = ..., error: _Optional[str] = ..., result: _Optional[bytes] = ..., error_code: _Optional[str] = ..., retry_after_s: _Optional[float] = ..., trace_id: _Optional[str] = ...) -> None: ...

class AcknowledgmentBatch(_message.Message):
    __slots__ = ("acknowledgments",)
    ACKNOWLEDGMENTS_FIELD_NUMBER: _ClassVar[int]
    acknowledgments: _containers.RepeatedCompositeFieldContainer[Acknowledgment]
    def __init__(self, acknowledgments: _Optional[_Iterable[_Union[Acknowledgment, _Mapping]]] = ...) -> None: ...

class StreamHello(_message.Message):
    __slots__ = ("api_key", "kind", "async_mode")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ASYNC_MODE_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    kind: StreamKind
    async_mode: bool
    def __init__(self, api_key: _Optional[str] = ..., kind: _Optional[_Union[StreamKind, str]] = ..., async_mode: _Optional[bool] = ...) -> None: ...

class RoutingScore(_message.Message):
    __slots__ = ("cost_score", "load_score", "latency_score", "total_score")
    COST_SCORE_FIELD_NUMBER: _ClassVar[int]
    LOAD_SCORE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SCORE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    cost_score: float
    load_score: float
    latency_score: float
    total_score: float
    def __init__(self, cost_score: _Optional[float] = ..., load_score: _Optional[float] = ..., latency_score: _Optional[float] = ..., total_score: _Optional[float] = ...) -> None: ...

class RoutingDecision(_message.Message):
    __slots__ = ("message_id", "target_endpoint", "score_breakdown", "fallback_endpoints", "reason", "group")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SCORE_BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    target_endpoint: str
    score_breakdown: RoutingScore
    fallback_endpoints: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    group: str
    def __init__(self, message_id: _Optional[str] = ..., target_endpoint: _Optional[str] = ..., score_breakdown: _Optional[_Union[RoutingScore, _Mapping]] = ..., fallback_endpoints: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class EndpointMetrics(_message.Message):
    __slots__ = ("endpoint_id", "capacity", "current_load", "cost_per_1k_tokens", "latency_p99_ms", "error_rate", "health_status", "url", "kind", "group", "model", "tags", "region", "api_key_env")
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CURRENT_LOAD_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1K_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_STATUS_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ENV_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    capacity: int
    current_load: int
    cost_per_1k_tokens: float
    latency_p99_ms: float
    error_rate: float
    health_status: HealthStatus
    url: str
    kind: str
    group: str
    model: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    region: str
    api_key_env: str
    def __init__(self, endpoint_id: _Optional[str] = ..., capacity: _Optional[int] = ..., current_load: _Optional[int] = ..., cost_per_1k_tokens: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., error_rate: _Optional[float] = ..., health_status: _Optional[_Union[HealthStatus, str]] = ..., url: _Optional[str] = ..., kind: _Optional[str] = ..., group: _Optional[str] = ..., model: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., region: _Optional[str] = ..., api_key_env: _Optional[str] = ...) -> None: ...

class TaskStep(_message.Message):
    __slots__ = ("step_id", "message", "dependencies", "status", "acknowledgment", "compensation")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGMENT_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    message: AIMessage
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    status: TaskStatus
    acknowledgment: Acknowledgment
    compensation: AIMessage
    def __init__(self, step_id: _Optional[str] = ..., message: _Optional[_Union[AIMessage, _Mapping]] = ..., dependencies: _Optional[_Iterable[str]] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., acknowledgment: _Optional[_Union[Acknowledgment, _Mapping]] = ..., compensation: _Optional[_Union[AIMessage, _Mapping]] = ...) -> None: ...

class TaskState(_message.Message):
    __slots__ = ("task_graph_id", "agent_id", "steps", "status", "created_at_ms", "updated_at_ms")
    TASK_GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    task_graph_id: str
    agent_id: str
    steps: _containers.RepeatedCompositeFieldContainer[TaskStep]
    status: TaskStatus
    created_at_ms: int
    updated_at_ms: int
    def __init__(self, task_graph_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[TaskStep, _Mapping]]] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ...) -> None: ...

class DeduplicationRecord(_message.Message):
    __slots__ = ("dedup_key", "message_id", "acknowledgment", "created_at_ms", "expires_at_ms")
    DEDUP_KEY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGMENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    dedup_key: bytes
    message_id: str
    acknowledgment: Acknowledgment
    created_at_ms: int
    expires_at_ms: int
    def __init__(self, dedup_key: _Optional[bytes] = ..., message_id: _Optional[str] = ..., acknowledgment: _Optional[_Union[Acknowledgment, _Mapping]] = ..., created_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class BudgetInfo(_message.Message):
    __slots__ = ("agent_id", "initial_tokens", "remaining_tokens", "reserved_tokens", "consumption_rate", "reset_at")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    INITIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONSUMPTION_RATE_FIELD_NUMBER: _ClassVar[int]
    RESET_AT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    initial_tokens: int
    remaining_tokens: int
    reserved_tokens: int
    consumption_rate: float
    reset_at: int
    def __init__(self, agent_id: _Optional[str] = ..., initial_tokens: _Optional[int] = ..., remaining_tokens: _Optional[int] = ..., reserved_tokens: _Optional[int] = ..., consumption_rate: _Optional[float] = ..., reset_at: _Optional[int] = ...) -> None: ...

class TransactionStep(_message.Message):
    __slots__ = ("step_id", "action", "compensation", "status")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    COMPENSATION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    action: AIMessage
    compensation: AIMessage
    status: TaskStatus
    def __init__(self, step_id: _Optional[str] = ..., action: _Optional[_Union[AIMessage, _Mapping]] = ..., compensation: _Optional[_Union[AIMessage, _Mapping]] = ..., status: _Optional[_Union[TaskStatus, str]] = ...) -> None: ...

class TransactionRecord(_message.Message):
    __slots__ = ("transaction_id", "steps", "status", "created_at_ms")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    steps: _containers.RepeatedCompositeFieldContainer[TransactionStep]
    status: TaskStatus
    created_at_ms: int
    def __init__(self, transaction_id: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[TransactionStep, _Mapping]]] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class MetricValue(_message.Message):
    __slots__ = ("name", "value", "labels", "timestamp_ms")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    labels: _containers.ScalarMap[str, str]
    timestamp_ms: int
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...
