"""Both receivers with TLS, mutual TLS and a bearer token, against real clients on loopback
(the SDK exporters, raw grpc and aiohttp) and certificates generated for the test."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import grpc
import grpc.aio
import pytest
import requests
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace.export import SpanExportResult

from sampler.receive.auth import BearerAuth
from sampler.receive.grpc_server import EXPORT_METHOD, GrpcReceiver
from sampler.receive.http_server import PROTOBUF, HttpReceiver
from sampler.receive.intake import ReceiverStats
from sampler.tls import ServerTls
from tests.certificates import Certificates, make_certificates
from tests.unit.receive._support import (
    RecordingConsumer,
    flow,
    ids_of,
    make_request,
    received_ids,
    run,
    sdk_spans,
)

TOKEN = "s3cret-Token_for.tests~42"
MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def server_tls(certs: Certificates, *, mutual: bool = False) -> ServerTls:
    ca = str(certs.ca) if mutual else ""
    return ServerTls(str(certs.server_cert), str(certs.server_key), ca)


def channel_credentials(certs: Certificates, *, client_cert: bool) -> grpc.ChannelCredentials:
    if not client_cert:
        return grpc.ssl_channel_credentials(root_certificates=certs.read("ca"))
    return grpc.ssl_channel_credentials(
        root_certificates=certs.read("ca"),
        private_key=certs.read("client_key"),
        certificate_chain=certs.read("client_cert"),
    )


def client_ssl(certs: Certificates, *, client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if client_cert:
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return context


# --- gRPC -----------------------------------------------------------------------------------


@asynccontextmanager
async def grpc_serving(
    consumer: RecordingConsumer, tls: ServerTls | None, auth: BearerAuth | None = None
) -> AsyncIterator[tuple[GrpcReceiver, str]]:
    receiver = GrpcReceiver(
        flow(consumer), "127.0.0.1:0", max_message_bytes=MAX_BYTES, tls=tls, auth=auth
    )
    port = await receiver.start()
    try:
        yield receiver, f"localhost:{port}"
    finally:
        await receiver.stop(grace=1.0)


async def grpc_export(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.StatusCode:
    """One raw Export call; the status code it ends with."""
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        call = channel.unary_unary(EXPORT_METHOD, None, None)
        try:
            await call(make_request().SerializeToString(), timeout=5, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def test_grpc_sdk_exporter_delivers_over_mutual_tls_with_a_token(certs: Certificates) -> None:
    spans = sdk_spans(["execute_tool", "chat"])
    consumer = RecordingConsumer()

    async def scenario() -> SpanExportResult:
        tls = server_tls(certs, mutual=True)
        async with grpc_serving(consumer, tls, BearerAuth(TOKEN)) as (_, target):
            exporter = OTLPSpanExporter(
                endpoint=target,
                credentials=channel_credentials(certs, client_cert=True),
                headers={"authorization": f"Bearer {TOKEN}"},
                timeout=5,
            )
            try:
                return await asyncio.to_thread(exporter.export, spans)
            finally:
                exporter.shutdown()

    assert run(scenario()) is SpanExportResult.SUCCESS
    assert received_ids(consumer) == ids_of(spans)


@pytest.mark.parametrize(
    ("mutual", "client", "expected"),
    [
        (False, "plaintext", grpc.StatusCode.UNAVAILABLE),
        (False, "tls", grpc.StatusCode.OK),
        (True, "tls", grpc.StatusCode.UNAVAILABLE),
        (True, "tls+cert", grpc.StatusCode.OK),
    ],
    ids=[
        "tls-refuses-plaintext",
        "tls-accepts-tls",
        "mtls-refuses-no-cert",
        "mtls-accepts-cert",
    ],
)
def test_grpc_tls_handshakes(
    certs: Certificates, mutual: bool, client: str, expected: grpc.StatusCode
) -> None:
    consumer = RecordingConsumer()
    credentials = (
        None if client == "plaintext" else channel_credentials(certs, client_cert="cert" in client)
    )

    async def scenario() -> grpc.StatusCode:
        async with grpc_serving(consumer, server_tls(certs, mutual=mutual)) as (_, target):
            return await grpc_export(target, credentials)

    assert run(scenario()) is expected
    assert len(consumer.requests) == (1 if expected is grpc.StatusCode.OK else 0)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer wrong"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", TOKEN),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", f"Basic {TOKEN}"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", f"Bearer {TOKEN}x"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", f"Bearer {TOKEN}"),), grpc.StatusCode.OK),
        ((("authorization", f"bearer {TOKEN}"),), grpc.StatusCode.OK),
    ],
    ids=["missing", "wrong", "no-scheme", "basic", "longer", "right", "scheme-any-case"],
)
def test_grpc_bearer_token(
    certs: Certificates,
    metadata: tuple[tuple[str, str], ...],
    expected: grpc.StatusCode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = RecordingConsumer()

    async def scenario() -> tuple[grpc.StatusCode, ReceiverStats]:
        tls = server_tls(certs)
        async with grpc_serving(consumer, tls, BearerAuth(TOKEN)) as (receiver, target):
            code = await grpc_export(
                target, channel_credentials(certs, client_cert=False), metadata
            )
            return code, receiver.stats

    with caplog.at_level(logging.DEBUG, logger="sampler"):
        code, stats = run(scenario())
    assert code is expected
    refused = expected is grpc.StatusCode.UNAUTHENTICATED
    assert (stats.requests_unauthenticated, stats.requests_ok) == (int(refused), int(not refused))
    assert len(consumer.requests) == int(not refused)
    assert TOKEN not in caplog.text


def test_grpc_token_without_tls_works_on_plaintext() -> None:
    """A sidecar on loopback may use a token without TLS (the runtime warns about it)."""
    consumer = RecordingConsumer()

    async def scenario() -> tuple[grpc.StatusCode, grpc.StatusCode]:
        async with grpc_serving(consumer, None, BearerAuth(TOKEN)) as (_, target):
            without = await grpc_export(target, None)
            with_token = await grpc_export(target, None, (("authorization", f"Bearer {TOKEN}"),))
            return without, with_token

    assert run(scenario()) == (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.OK)


def test_grpc_token_is_checked_before_the_message_is_read() -> None:
    """Without the token, a message over max_message_bytes gets UNAUTHENTICATED, not grpc's
    "larger than max" RESOURCE_EXHAUSTED: it was never read. The health service, which probes
    call without a token, still answers."""
    consumer = RecordingConsumer()
    oversize = bytes(MAX_BYTES * 4)

    async def scenario() -> tuple[grpc.StatusCode, grpc.StatusCode, str, ReceiverStats]:
        health = health_aio.HealthServicer()
        receiver = GrpcReceiver(
            flow(consumer),
            "127.0.0.1:0",
            max_message_bytes=MAX_BYTES,
            auth=BearerAuth(TOKEN),
            health=health,
        )
        port = await receiver.start()
        try:
            await health.set("", health_pb2.HealthCheckResponse.SERVING)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                export = channel.unary_unary(EXPORT_METHOD, None, None)
                codes = []
                for metadata in ((), (("authorization", f"Bearer {TOKEN}"),)):
                    try:
                        await export(oversize, timeout=5, metadata=metadata)
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as err:
                        codes.append(err.code())
                check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[no-untyped-call]
                answer = await check(health_pb2.HealthCheckRequest(), timeout=5)
            return (
                codes[0],
                codes[1],
                health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status),
                receiver.stats,
            )
        finally:
            await receiver.stop(grace=1.0)

    without, with_token, health_status, stats = run(scenario())
    assert without is grpc.StatusCode.UNAUTHENTICATED
    assert with_token is grpc.StatusCode.RESOURCE_EXHAUSTED  # read, and over the limit
    assert health_status == "SERVING"
    assert stats.requests_unauthenticated == 1
    assert consumer.requests == []


# --- HTTP -----------------------------------------------------------------------------------


@asynccontextmanager
async def http_serving(
    consumer: RecordingConsumer, tls: ServerTls | None, auth: BearerAuth | None = None
) -> AsyncIterator[tuple[HttpReceiver, str]]:
    receiver = HttpReceiver(
        flow(consumer), "127.0.0.1:0", max_message_bytes=MAX_BYTES, tls=tls, auth=auth
    )
    port = await receiver.start()
    scheme = "http" if tls is None else "https"
    try:
        yield receiver, f"{scheme}://localhost:{port}/v1/traces"
    finally:
        await receiver.stop()


def test_http_sdk_exporter_delivers_over_mutual_tls_with_a_token(certs: Certificates) -> None:
    spans = sdk_spans(["execute_tool"])
    consumer = RecordingConsumer()

    # requests lets REQUESTS_CA_BUNDLE (set on some machines) override the exporter's CA file.
    session = requests.Session()
    session.trust_env = False

    async def scenario() -> SpanExportResult:
        tls = server_tls(certs, mutual=True)
        async with http_serving(consumer, tls, BearerAuth(TOKEN)) as (_, url):
            exporter = HttpSpanExporter(
                session=session,
                endpoint=url,
                certificate_file=str(certs.ca),
                client_certificate_file=str(certs.client_cert),
                client_key_file=str(certs.client_key),
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=5,
            )
            try:
                return await asyncio.to_thread(exporter.export, spans)
            finally:
                exporter.shutdown()

    assert run(scenario()) is SpanExportResult.SUCCESS
    assert received_ids(consumer) == ids_of(spans)


async def http_post(url: str, ssl_context: ssl.SSLContext | None, **headers: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url,
            data=make_request().SerializeToString(),
            headers={"Content-Type": PROTOBUF, **headers},
            ssl=ssl_context if ssl_context is not None else True,
        ) as response:
            await response.read()
            return response.status


def test_http_mutual_tls_refuses_a_client_without_a_certificate(certs: Certificates) -> None:
    consumer = RecordingConsumer()

    async def scenario() -> tuple[BaseException | None, int]:
        async with http_serving(consumer, server_tls(certs, mutual=True)) as (_, url):
            refused: BaseException | None = None
            try:
                await http_post(url, client_ssl(certs, client_cert=False))
            except (aiohttp.ClientError, ssl.SSLError, ConnectionError) as exc:
                refused = exc
            accepted = await http_post(url, client_ssl(certs, client_cert=True))
            return refused, accepted

    refused, accepted = run(scenario())
    assert refused is not None
    assert accepted == 200
    assert len(consumer.requests) == 1


def test_http_tls_refuses_a_client_that_does_not_trust_the_certificate(
    certs: Certificates,
) -> None:
    async def scenario() -> None:
        async with http_serving(RecordingConsumer(), server_tls(certs)) as (_, url):
            untrusting = ssl.create_default_context(cafile=str(certs.other_ca))
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http_post(url, untrusting)

    run(scenario())


@pytest.mark.parametrize(
    ("authorization", "content_type", "status"),
    [
        (None, PROTOBUF, 401),
        ("Bearer wrong", PROTOBUF, 401),
        ("Bearer wrong", "application/json", 401),
        ("Bearer wrong", "text/plain", 401),
        (f"Bearer {TOKEN}", PROTOBUF, 200),
    ],
    ids=["missing", "wrong", "wrong-json", "wrong-before-content-type", "right"],
)
def test_http_bearer_token(
    certs: Certificates,
    authorization: str | None,
    content_type: str,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = RecordingConsumer()

    async def scenario() -> tuple[int, dict[str, str], bytes, ReceiverStats]:
        async with http_serving(consumer, server_tls(certs), BearerAuth(TOKEN)) as (receiver, url):
            headers = {"Content-Type": content_type}
            if authorization is not None:
                headers["Authorization"] = authorization
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    url,
                    data=make_request().SerializeToString(),
                    headers=headers,
                    ssl=client_ssl(certs, client_cert=False),
                ) as response:
                    return (
                        response.status,
                        dict(response.headers),
                        await response.read(),
                        receiver.stats,
                    )

    with caplog.at_level(logging.DEBUG, logger="sampler"):
        got, headers, body, stats = run(scenario())
    assert got == status
    assert TOKEN not in caplog.text
    if status == 200:
        assert stats.requests_ok == 1
        return
    assert headers["WWW-Authenticate"] == 'Bearer realm="agent-sampler"'
    assert stats.requests_unauthenticated == 1
    assert consumer.requests == []
    if content_type == PROTOBUF:
        assert status_pb2.Status.FromString(body).code == code_pb2.UNAUTHENTICATED


def test_http_reads_little_of_an_unauthenticated_body() -> None:
    """A 1 MiB body without the token is read and dropped, then answered 401 cleanly; of a
    64 MiB one the sampler reads about a megabyte, answers 401 and closes the connection
    (aiohttp alone would read the rest first, for up to 10 s)."""

    async def send(port: int, size: int) -> tuple[bytes, int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PROTOBUF}\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        writer.write(head.encode())
        sent = 0
        try:
            while sent < size:
                chunk = bytes(min(256 << 10, size - sent))
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 5)
                sent += len(chunk)
        except ConnectionError:
            pass  # closed on us: what was answered is still read below
        try:
            answer = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            answer = b""
        writer.close()
        return answer, sent

    async def scenario() -> tuple[tuple[bytes, int], tuple[bytes, int]]:
        async with http_serving(RecordingConsumer(), None, BearerAuth(TOKEN)) as (receiver, url):
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            small = await send(port, 1 << 20)
            large = await send(port, 64 << 20)
            assert receiver.stats.requests_unauthenticated == 2
            return small, large

    (small_answer, _), (_, large_sent) = run(scenario())
    assert small_answer.startswith(b"HTTP/1.1 401 ")
    # the socket buffers take some megabytes more before the writer notices the close
    assert large_sent < 32 << 20
