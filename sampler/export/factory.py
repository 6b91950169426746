"""Build the exporter a downstream URL names: its transport, behind the delivery loop."""

from __future__ import annotations

import random

from sampler.export.base import ExporterSettings, Transport
from sampler.export.delivery import QueuedExporter, RetryClock
from sampler.export.file_transport import FileTransport
from sampler.export.grpc_transport import GrpcTransport
from sampler.export.http_transport import HttpTransport
from sampler.export.url import ACCEPTED_FORMS, parse_downstream

__all__ = ["ACCEPTED_FORMS", "exporter_from_url", "transport_from_url"]


def exporter_from_url(
    url: str,
    settings: ExporterSettings,
    *,
    clock: RetryClock | None = None,
    rng: random.Random | None = None,
) -> QueuedExporter:
    """Raises ValueError naming the URL and the accepted forms when it cannot be used, or when
    TLS settings are given for a URL that does not use TLS."""
    return QueuedExporter(transport_from_url(url, settings), settings, clock=clock, rng=rng)


def transport_from_url(url: str, settings: ExporterSettings) -> Transport:
    """The transport alone (see ``exporter_from_url`` for the errors)."""
    downstream = parse_downstream(url)
    if settings.tls is not None and not downstream.secure:
        raise ValueError(
            f"downstream URL {url!r} does not use TLS, yet exporter.tls is set: "
            "use grpcs:// or https://, or remove exporter.tls"
        )
    if downstream.scheme == "file":
        return FileTransport(downstream.target, settings.rotation)
    if downstream.scheme in ("grpc", "grpcs"):
        return GrpcTransport(downstream.target, settings, secure=downstream.secure)
    return HttpTransport(downstream.target, settings)
