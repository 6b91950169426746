"""`agent-sampler run` with its security settings, end to end: mutual TLS and a bearer token on
both receivers (the real SDK exporters as clients), mutual TLS and a header to a TLS-only
downstream, secrets taken from environment variables and never written to the logs.
Certificates are generated for the test."""

from __future__ import annotations

import os
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from sampler.tls import ServerTls
from tests.certificates import Certificates, make_certificates
from tests.e2e.harness import LOOPBACK, GrpcSink, SamplerProcess, running_sampler, wait_until
from tests.e2e.test_live_sampler import SPANS_PER_TURN, Client, config, decided

pytestmark = pytest.mark.e2e

INGEST_TOKEN = "ingest-Token_0123456789abcdef"
DOWNSTREAM_TOKEN = "downstream-Token_fedcba9876543210"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_sink(certs: Certificates) -> Iterator[GrpcSink]:
    """A downstream that speaks TLS only and wants a client certificate from our CA."""
    tls = ServerTls(str(certs.server_cert), str(certs.server_key), str(certs.ca))
    sink = GrpcSink(credentials=tls.grpc_credentials()).start()
    yield sink
    sink.stop()


def secure_config(certs: Certificates, downstream: str) -> str:
    return config(
        wait="1s",
        extra=f"""
receivers:
  tls:
    cert_file: {certs.server_cert}
    key_file: {certs.server_key}
    client_ca_file: {certs.ca}
  auth:
    bearer_token: ${{env:AGENT_SAMPLER_INGEST_TOKEN}}
logging:
  level: debug
""",
    ).replace(
        "exporter:\n",
        f"""exporter:
  url: {downstream}
  headers:
    authorization: Bearer ${{env:AGENT_SAMPLER_DOWNSTREAM_TOKEN}}
  tls:
    ca_file: {certs.ca}
    cert_file: {certs.client_cert}
    key_file: {certs.client_key}
""",
    )


def grpc_credentials(certs: Certificates, *, client_cert: bool) -> grpc.ChannelCredentials:
    if not client_cert:
        return grpc.ssl_channel_credentials(root_certificates=certs.read("ca"))
    return grpc.ssl_channel_credentials(
        root_certificates=certs.read("ca"),
        private_key=certs.read("client_key"),
        certificate_chain=certs.read("client_cert"),
    )


def raw_grpc(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.StatusCode:
    """One empty Export call; the status code it ends with."""
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        call = channel.unary_unary(
            EXPORT,
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        try:
            call(ExportTraceServiceRequest(), timeout=5, metadata=metadata)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[no-any-return, attr-defined]
    return grpc.StatusCode.OK


def raw_http(url: str, context: ssl.SSLContext, **headers: str) -> tuple[int, str]:
    """One empty protobuf POST; the status and its WWW-Authenticate header."""
    request = urllib.request.Request(
        url,
        data=b"",
        method="POST",
        headers={"Content-Type": "application/x-protobuf", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.headers.get("WWW-Authenticate", "")
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("WWW-Authenticate", "")


def http_context(certs: Certificates, *, client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if client_cert:
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return context


def test_mutual_tls_and_tokens_end_to_end(
    tmp_path: Path, certs: Certificates, tls_sink: GrpcSink
) -> None:
    env = {
        "AGENT_SAMPLER_INGEST_TOKEN": INGEST_TOKEN,
        "AGENT_SAMPLER_DOWNSTREAM_TOKEN": DOWNSTREAM_TOKEN,
    }
    with running_sampler(secure_config(certs, tls_sink.url), tmp_path, None, env) as sampler:
        grpc_target = f"localhost:{sampler.grpc_port}"
        http_url = f"https://localhost:{sampler.http_port}/v1/traces"

        # The real SDK exporters, over mutual TLS, with the token: error turns are kept.
        grpc_client = Client(
            OTLPSpanExporter(
                endpoint=grpc_target,
                credentials=grpc_credentials(certs, client_cert=True),
                headers={"authorization": f"Bearer {INGEST_TOKEN}"},
                timeout=5,
            )
        )
        kept = {grpc_client.turn("conv-grpc", error=True)}
        grpc_client.close()
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE would replace our CA file
        http_client = Client(
            HttpSpanExporter(
                endpoint=http_url,
                certificate_file=str(certs.ca),
                client_certificate_file=str(certs.client_cert),
                client_key_file=str(certs.client_key),
                headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
                timeout=5,
                session=session,
            )
        )
        kept.add(http_client.turn("conv-http", error=True))
        http_client.close()

        # ... and forwarded over mutual TLS to the TLS-only downstream, with its header.
        wait_until(lambda: decided(sampler) == 2, 15, "both sessions decided")
        wait_until(lambda: len(tls_sink.spans()) == 2 * SPANS_PER_TURN, 10, "kept spans downstream")
        assert {s.trace_id for s in tls_sink.spans()} == kept
        assert {m.get("authorization") for m in tls_sink.metadata} == {f"Bearer {DOWNSTREAM_TOKEN}"}

        # Refused: no client certificate (handshake), plaintext, no token, a wrong token.
        with_cert = grpc_credentials(certs, client_cert=True)
        assert raw_grpc(grpc_target, grpc_credentials(certs, client_cert=False)) is (
            grpc.StatusCode.UNAVAILABLE
        )
        assert raw_grpc(f"{LOOPBACK}:{sampler.grpc_port}", None) is grpc.StatusCode.UNAVAILABLE
        assert raw_grpc(grpc_target, with_cert) is grpc.StatusCode.UNAUTHENTICATED
        wrong = (("authorization", "Bearer wrong-token"),)
        assert raw_grpc(grpc_target, with_cert, wrong) is grpc.StatusCode.UNAUTHENTICATED
        right = (("authorization", f"Bearer {INGEST_TOKEN}"),)
        assert raw_grpc(grpc_target, with_cert, right) is grpc.StatusCode.OK

        with pytest.raises(OSError):  # a failed handshake, or (TLS 1.3) the connection dropped
            raw_http(http_url, http_context(certs, client_cert=False))
        http_with_cert = http_context(certs, client_cert=True)
        challenge = 'Bearer realm="agent-sampler"'
        assert raw_http(http_url, http_with_cert) == (401, challenge)
        assert raw_http(http_url, http_with_cert, Authorization="Bearer wrong") == (401, challenge)
        assert raw_http(http_url, http_with_cert, Authorization=f"Bearer {INGEST_TOKEN}") == (
            200,
            "",
        )

        assert sampler.metric("agent_sampler_receiver_requests", outcome="unauthenticated") == 4
        assert sampler.terminate() == 0
    logs = sampler.logs()
    assert "receiver listening on 127.0.0.1" in logs
    assert "(mutual TLS, bearer token required)" in logs
    assert "unauthenticated OTLP/gRPC request" in logs  # debug logging is on...
    assert INGEST_TOKEN not in logs and DOWNSTREAM_TOKEN not in logs  # ...and shows no secret


def _run_briefly(config_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    process = SamplerProcess(config_path, config_path.parent)
    return subprocess.run(
        process.command(),
        cwd=config_path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("mismatched-key", "receivers.tls: cannot use cert_file"),
        ("unset-variable", "environment variable AGENT_SAMPLER_UNSET_E2E is not set"),
    ],
    ids=["mismatched-key", "unset-variable"],
)
def test_unusable_security_settings_stop_the_start(
    tmp_path: Path, certs: Certificates, case: str, message: str
) -> None:
    if case == "mismatched-key":
        receivers = f"receivers:\n  tls:\n    cert_file: {certs.server_cert}\n"
        receivers += f"    key_file: {certs.client_key}\n"
    else:
        receivers = "receivers:\n  auth:\n    bearer_token: ${env:AGENT_SAMPLER_UNSET_E2E}\n"
    path = tmp_path / "sampler.yaml"
    path.write_text(config(extra=receivers))
    env = {k: v for k, v in os.environ.items() if k != "AGENT_SAMPLER_UNSET_E2E"}
    result = _run_briefly(path, env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
