"""Build the exporter a ``--downstream`` URL names."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from sampler.export.base import Exporter, ExporterSettings
from sampler.export.file_exporter import FileExporter
from sampler.export.grpc_exporter import GrpcExporter
from sampler.export.http_exporter import HttpExporter

ACCEPTED_FORMS = (
    "grpc://HOST:PORT, http://HOST:PORT[/path], https://HOST[:PORT][/path] "
    "or file://PATH (file://./out.jsonl and file://out.jsonl are relative, "
    "file:///abs/out.jsonl is absolute)"
)


def exporter_from_url(url: str, settings: ExporterSettings) -> Exporter:
    """Raises ValueError naming the URL and the accepted forms when it cannot be used."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise _bad(url, "no scheme")
    if scheme == "file":
        # Not urlsplit: in file://./x.jsonl it would take "." for a host.
        if not rest:
            raise _bad(url, "empty path")
        return FileExporter(rest, settings)
    if scheme not in ("grpc", "http", "https"):
        raise _bad(url, f"unknown scheme {scheme!r}")

    parts = urlsplit(url)
    port = _port(url, parts)
    if not parts.hostname:
        raise _bad(url, "missing host")
    if parts.query or parts.fragment:
        raise _bad(url, "query strings and fragments are not supported")
    if "@" in parts.netloc:
        raise _bad(url, "credentials in the URL are not supported; pass them as headers")
    if scheme == "grpc":
        if port is None:
            raise _bad(url, "missing port")
        if parts.path not in ("", "/"):
            raise _bad(url, "a gRPC endpoint takes no path")
        return GrpcExporter(parts.netloc, settings)
    if port is None and scheme == "http":
        raise _bad(url, "missing port")
    return HttpExporter(url, settings)


def _port(url: str, parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError as err:  # non-numeric or out of range
        raise _bad(url, f"invalid port ({err})") from None


def _bad(url: str, problem: str) -> ValueError:
    return ValueError(f"downstream URL {url!r}: {problem}; expected {ACCEPTED_FORMS}")
