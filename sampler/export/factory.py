"""Build the exporter a downstream URL names."""

from __future__ import annotations

from sampler.export.base import Exporter, ExporterSettings
from sampler.export.file_exporter import FileExporter
from sampler.export.grpc_exporter import GrpcExporter
from sampler.export.http_exporter import HttpExporter
from sampler.export.url import ACCEPTED_FORMS, parse_downstream

__all__ = ["ACCEPTED_FORMS", "exporter_from_url"]


def exporter_from_url(url: str, settings: ExporterSettings) -> Exporter:
    """Raises ValueError naming the URL and the accepted forms when it cannot be used, or when
    TLS settings are given for a URL that does not use TLS."""
    downstream = parse_downstream(url)
    if settings.tls is not None and not downstream.secure:
        raise ValueError(
            f"downstream URL {url!r} does not use TLS, yet exporter.tls is set: "
            "use grpcs:// or https://, or remove exporter.tls"
        )
    if downstream.scheme == "file":
        return FileExporter(downstream.target, settings)
    if downstream.scheme in ("grpc", "grpcs"):
        return GrpcExporter(downstream.target, settings, secure=downstream.secure)
    return HttpExporter(downstream.target, settings)
