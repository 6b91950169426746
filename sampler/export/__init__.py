"""Forward: deliver kept sessions downstream (OTLP/gRPC, OTLP/HTTP or an OTLP/JSON file).

The pipeline submits serialized ``ExportTraceServiceRequest`` bytes; ``base.QueuedExporter``
owns batching, the bounded queue and retries, and each transport only sends one batch.
"""

from sampler.export.base import (
    Exporter,
    ExporterSettings,
    ExporterStats,
    RetryPolicy,
    SendResult,
)

__all__ = ["Exporter", "ExporterSettings", "ExporterStats", "RetryPolicy", "SendResult"]
