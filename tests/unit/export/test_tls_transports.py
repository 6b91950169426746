"""The exporters over TLS (grpcs://, https://) to loopback collectors presenting certificates
generated for the test, with and without a client certificate (mutual TLS)."""

from __future__ import annotations

import pytest

from sampler.export.base import ExporterSettings
from sampler.export.delivery import QueuedExporter
from sampler.export.factory import exporter_from_url
from sampler.export.grpc_transport import GrpcTransport
from sampler.export.http_transport import HttpTransport
from sampler.export.retry import Outcome
from sampler.tls import ClientTls, ServerTls
from tests.certificates import NAMED_HOST, Certificates, make_certificates
from tests.unit.export.support import (
    GrpcCollector,
    HttpCollector,
    expected_names,
    make_request,
    run,
    settings,
    span_names,
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def collector_tls(certs: Certificates, *, mutual: bool) -> ServerTls:
    return ServerTls(str(certs.server_cert), str(certs.server_key), str(certs.ca) if mutual else "")


def client_tls(certs: Certificates, *, client_cert: bool = True, **extra: str) -> ClientTls:
    if not client_cert:
        return ClientTls(ca_file=str(certs.ca), **extra)
    return ClientTls(str(certs.ca), str(certs.client_cert), str(certs.client_key), **extra)


async def deliver(exporter: QueuedExporter) -> None:
    await exporter.start()
    assert exporter.try_submit(make_request("a", 2), 2)
    assert await exporter.flush(5.0)
    await exporter.stop(1.0)


def test_grpcs_delivers_with_mutual_tls_and_headers(certs: Certificates) -> None:
    async def scenario() -> tuple[GrpcCollector, QueuedExporter]:
        credentials = collector_tls(certs, mutual=True).grpc_credentials()
        async with GrpcCollector(credentials) as collector:
            exporter = exporter_from_url(
                f"grpcs://{collector.target}",
                settings(tls=client_tls(certs), headers={"authorization": "Bearer t0k"}),
            )
            assert isinstance(exporter.transport, GrpcTransport)
            await deliver(exporter)
        return collector, exporter

    collector, exporter = run(scenario())
    assert exporter.name == f"grpcs://{collector.target}"
    assert span_names(collector.requests) == expected_names(("a", 2))
    assert collector.metadata[0]["authorization"] == "Bearer t0k"


@pytest.mark.parametrize(
    ("override", "delivered"),
    [(NAMED_HOST, True), ("", False)],
    ids=["override-matches", "no-override"],
)
def test_grpcs_server_name_override(certs: Certificates, override: str, delivered: bool) -> None:
    """Reached at 127.0.0.1, a certificate naming only backend.internal needs the override."""

    async def scenario() -> tuple[GrpcCollector, Outcome]:
        named = ServerTls(str(certs.named_cert), str(certs.named_key))
        async with GrpcCollector(named.grpc_credentials()) as collector:
            tls = client_tls(certs, client_cert=False, server_name_override=override)
            transport = GrpcTransport(
                collector.target, settings(tls=tls, timeout_s=2.0), secure=True
            )
            await transport.open()
            result = await transport.send(make_request("a", 2))
            await transport.close()
        return collector, result.outcome

    collector, outcome = run(scenario())
    assert outcome is (Outcome.OK if delivered else Outcome.RETRYABLE)
    assert len(collector.requests) == int(delivered)


@pytest.mark.parametrize(
    ("mutual", "ca"),
    [(True, "ca"), (False, "other_ca"), (False, "")],
    ids=["mtls-without-client-cert", "untrusted-server", "system-roots-only"],
)
def test_grpcs_handshake_failures_are_retryable_and_deliver_nothing(
    certs: Certificates, mutual: bool, ca: str
) -> None:
    async def scenario() -> tuple[GrpcCollector, Outcome]:
        credentials = collector_tls(certs, mutual=mutual).grpc_credentials()
        async with GrpcCollector(credentials) as collector:
            tls = ClientTls(ca_file=str(getattr(certs, ca))) if ca else None
            transport = GrpcTransport(
                collector.target, settings(tls=tls, timeout_s=2.0), secure=True
            )
            await transport.open()
            result = await transport.send(make_request("a", 1))
            await transport.close()
        return collector, result.outcome

    collector, outcome = run(scenario())
    assert outcome is Outcome.RETRYABLE
    assert collector.requests == []


def test_https_delivers_with_mutual_tls(certs: Certificates) -> None:
    async def scenario() -> tuple[HttpCollector, QueuedExporter]:
        server = collector_tls(certs, mutual=True).ssl_context
        async with HttpCollector(ssl_context=server) as collector:
            url = collector.base_url.replace("127.0.0.1", "localhost")
            exporter = exporter_from_url(url, settings(tls=client_tls(certs)))
            assert isinstance(exporter.transport, HttpTransport)
            await deliver(exporter)
        return collector, exporter

    collector, exporter = run(scenario())
    assert exporter.name.startswith("https://localhost:")
    assert span_names(collector.requests) == expected_names(("a", 2))


def test_https_without_the_client_certificate_is_refused(certs: Certificates) -> None:
    async def scenario() -> tuple[HttpCollector, Outcome]:
        server = collector_tls(certs, mutual=True).ssl_context
        async with HttpCollector(ssl_context=server) as collector:
            tls = client_tls(certs, client_cert=False)
            transport = HttpTransport(collector.base_url, settings(tls=tls, timeout_s=2.0))
            await transport.open()
            result = await transport.send(make_request("a", 1))
            await transport.close()
        return collector, result.outcome

    collector, outcome = run(scenario())
    assert outcome is Outcome.RETRYABLE
    assert collector.requests == []


@pytest.mark.parametrize(
    ("override", "delivered"),
    [(NAMED_HOST, True), ("", False)],
    ids=["override-matches", "no-override"],
)
def test_https_server_name_override(certs: Certificates, override: str, delivered: bool) -> None:
    async def scenario() -> tuple[HttpCollector, Outcome]:
        named = ServerTls(str(certs.named_cert), str(certs.named_key))
        async with HttpCollector(ssl_context=named.ssl_context) as collector:
            tls = client_tls(certs, client_cert=False, server_name_override=override)
            transport = HttpTransport(collector.base_url, settings(tls=tls, timeout_s=2.0))
            await transport.open()
            result = await transport.send(make_request("a", 2))
            await transport.close()
        return collector, result.outcome

    collector, outcome = run(scenario())
    assert outcome is (Outcome.OK if delivered else Outcome.RETRYABLE)
    assert len(collector.requests) == int(delivered)


@pytest.mark.parametrize(
    "url",
    ["grpc://127.0.0.1:4317", "http://127.0.0.1:4318", "file://kept.jsonl"],
    ids=["grpc", "http", "file"],
)
def test_tls_settings_with_a_plaintext_url_are_refused(certs: Certificates, url: str) -> None:
    with pytest.raises(ValueError, match="does not use TLS, yet exporter.tls is set"):
        exporter_from_url(url, ExporterSettings(tls=client_tls(certs)))


def test_settings_repr_hides_the_headers() -> None:
    assert "t0ken" not in repr(ExporterSettings(headers={"authorization": "Bearer t0ken"}))
