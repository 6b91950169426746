"""`google.rpc.Status` bodies shared by the gRPC and HTTP receivers."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2

INVALID_ARGUMENT: int = code_pb2.INVALID_ARGUMENT
RESOURCE_EXHAUSTED: int = code_pb2.RESOURCE_EXHAUSTED
UNAUTHENTICATED: int = code_pb2.UNAUTHENTICATED
DEADLINE_EXCEEDED: int = code_pb2.DEADLINE_EXCEEDED


def error_status(code: int, message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code, message=message)


def throttle_status(message: str, retry_after_s: float) -> status_pb2.Status:
    """RESOURCE_EXHAUSTED carrying a `google.rpc.RetryInfo`, the OTLP "retry later" signal."""
    delay = Duration()
    delay.FromNanoseconds(round(max(retry_after_s, 0.0) * 1e9))
    status = status_pb2.Status(code=RESOURCE_EXHAUSTED, message=message)
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status
