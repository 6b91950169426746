"""Forward: deliver kept sessions downstream (OTLP/gRPC, OTLP/HTTP or an OTLP/JSON file).

The pipeline submits serialized ``ExportTraceServiceRequest`` bytes to an ``Exporter``. Each
exporter is three rooms (``base`` says which module is which): retry, queues, and the
delivery loop between a queue and a transport that only sends one batch.
"""

from sampler.export.base import Exporter, ExporterSettings, ExporterStats
from sampler.export.retry import RetryPolicy, SendResult

__all__ = ["Exporter", "ExporterSettings", "ExporterStats", "RetryPolicy", "SendResult"]
