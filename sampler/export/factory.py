"""Build the exporter a downstream URL names."""

from __future__ import annotations

from sampler.export.base import Exporter, ExporterSettings
from sampler.export.file_exporter import FileExporter
from sampler.export.grpc_exporter import GrpcExporter
from sampler.export.http_exporter import HttpExporter
from sampler.export.url import ACCEPTED_FORMS, parse_downstream

__all__ = ["ACCEPTED_FORMS", "exporter_from_url"]


def exporter_from_url(url: str, settings: ExporterSettings) -> Exporter:
    """Raises ValueError naming the URL and the accepted forms when it cannot be used."""
    downstream = parse_downstream(url)
    if downstream.scheme == "file":
        return FileExporter(downstream.target, settings)
    if downstream.scheme == "grpc":
        return GrpcExporter(downstream.target, settings)
    return HttpExporter(downstream.target, settings)
