"""exporter_from_url / transport_from_url: which downstream URLs are accepted, and what each
one builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from sampler.export.base import ExporterSettings
from sampler.export.factory import exporter_from_url, transport_from_url
from sampler.export.file_transport import FileTransport
from sampler.export.grpc_transport import GrpcTransport
from sampler.export.http_transport import HttpTransport

SETTINGS = ExporterSettings()


@pytest.mark.parametrize(
    ("url", "kind", "name"),
    [
        ("grpc://127.0.0.1:4317", GrpcTransport, "grpc://127.0.0.1:4317"),
        ("grpc://collector:4317/", GrpcTransport, "grpc://collector:4317"),
        ("grpc://[::1]:4317", GrpcTransport, "grpc://[::1]:4317"),
        ("GRPC://localhost:4317", GrpcTransport, "grpc://localhost:4317"),
        ("http://127.0.0.1:4318", HttpTransport, "http://127.0.0.1:4318/v1/traces"),
        ("http://h:4318/otlp", HttpTransport, "http://h:4318/otlp/v1/traces"),
        ("http://h:4318/v1/traces", HttpTransport, "http://h:4318/v1/traces"),
        ("http://[::1]:4318", HttpTransport, "http://[::1]:4318/v1/traces"),
        ("https://api.example.com", HttpTransport, "https://api.example.com/v1/traces"),
        (
            "https://api.example.com:8443/x",
            HttpTransport,
            "https://api.example.com:8443/x/v1/traces",
        ),
        ("file://./kept.jsonl", FileTransport, "file://./kept.jsonl"),
        ("file://kept.jsonl", FileTransport, "file://kept.jsonl"),
        ("file:///var/lib/sampler/kept.jsonl", FileTransport, "file:///var/lib/sampler/kept.jsonl"),
    ],
    ids=[
        "grpc-ipv4",
        "grpc-trailing-slash",
        "grpc-ipv6",
        "grpc-uppercase-scheme",
        "http",
        "http-prefix",
        "http-full-path",
        "http-ipv6",
        "https-default-port",
        "https-port-and-path",
        "file-dot-relative",
        "file-relative",
        "file-absolute",
    ],
)
def test_accepted_urls(url: str, kind: type, name: str) -> None:
    transport = transport_from_url(url, SETTINGS)
    assert isinstance(transport, kind)
    assert transport.name == name


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("file://./kept.jsonl", Path("kept.jsonl")),
        ("file://kept.jsonl", Path("kept.jsonl")),
        ("file://out/kept.jsonl", Path("out/kept.jsonl")),
        ("file:///tmp/kept.jsonl", Path("/tmp/kept.jsonl")),
    ],
    ids=["dot-relative", "relative", "relative-dir", "absolute"],
)
def test_file_paths(url: str, path: Path) -> None:
    transport = transport_from_url(url, SETTINGS)
    assert isinstance(transport, FileTransport)
    assert transport.path == path
    assert transport.path.is_absolute() == path.is_absolute()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("127.0.0.1:4317", "no scheme"),
        ("ftp://h:21", "unknown scheme 'ftp'"),
        ("grpc://collector", "missing port"),
        ("grpcs://collector", "missing port"),
        ("http://collector", "missing port"),
        ("grpc://collector:otlp", "invalid port"),
        ("grpc://collector:70000", "invalid port"),
        ("grpc://:4317", "missing host"),
        ("grpc://collector:4317/v1/traces", "takes no path"),
        ("http://h:4318/v1/traces?x=1", "query strings"),
        ("http://user:pw@h:4318", "credentials"),
        ("file://", "empty path"),
    ],
    ids=[
        "no-scheme",
        "unknown-scheme",
        "grpc-no-port",
        "grpcs-no-port",
        "http-no-port",
        "port-not-a-number",
        "port-out-of-range",
        "no-host",
        "grpc-with-path",
        "query",
        "userinfo",
        "file-empty",
    ],
)
def test_rejected_urls_name_the_url_and_the_accepted_forms(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        exporter_from_url(url, SETTINGS)
    message = str(caught.value)
    assert repr(url) in message
    assert problem in message
    assert "grpc://HOST:PORT" in message and "file://PATH" in message


@pytest.mark.parametrize(
    ("url", "name", "secure"),
    [
        ("grpcs://collector:4317", "grpcs://collector:4317", True),
        ("GRPCS://[::1]:4317", "grpcs://[::1]:4317", True),
        ("grpc://collector:4317", "grpc://collector:4317", False),
    ],
    ids=["grpcs", "grpcs-ipv6-uppercase", "grpc-is-plaintext"],
)
def test_the_scheme_alone_turns_grpc_tls_on(url: str, name: str, secure: bool) -> None:
    transport = transport_from_url(url, SETTINGS)
    assert isinstance(transport, GrpcTransport)
    assert (transport.name, transport.secure) == (name, secure)
