"""Type stubs for sampler._native, the native core (Rust, native/src/python.rs)."""

__version__: str

class InvalidRequest(ValueError):
    """Not a valid OTLP export request: INVALID_ARGUMENT / HTTP 400."""

class RequestTooLarge(ValueError):
    """Over a receiver limit (spans, size): RESOURCE_EXHAUSTED without RetryInfo / HTTP 413."""

def otlp_json_to_protobuf(body: bytes, max_output_bytes: int, max_spans: int) -> bytes:
    """The protobuf encoding of an OTLP/JSON ``ExportTraceServiceRequest``, converted without
    the GIL.

    Accepts and rejects what ``sampler.otlp.json_codec.request_from_json`` does (except a field
    given twice in one object, a UTF-16/32 body, or arrays and objects nested over 512 deep,
    which it refuses). Raises ``InvalidRequest`` for a body that is not valid, and
    ``RequestTooLarge`` as soon as the output would exceed ``max_output_bytes`` or the spans
    ``max_spans``.
    """
