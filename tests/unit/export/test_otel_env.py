"""The OpenTelemetry SDKs' OTEL_EXPORTER_OTLP_* variables as defaults for the downstream:
read as the SDKs read them, below the config file and the flags, each problem reported and
the variable ignored. The last tests deliver through exporters built that way to real servers
on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sampler.cli import apply_overrides, build_parser
from sampler.config.load import load_config, load_config_text
from sampler.config.model import SamplerConfig
from sampler.export.factory import exporter_from_url
from sampler.export.otel_env import apply_otel_env
from sampler.runtime import exporter_settings
from tests.certificates import Certificates, make_certificates
from tests.unit.export.support import (
    GrpcCollector,
    HttpCollector,
    expected_names,
    make_request,
    run,
    span_names,
)

E = "OTEL_EXPORTER_OTLP_"
RULES = "rules: [{name: all, action: keep}]\n"


def from_env(environ: dict[str, str], config: SamplerConfig | None = None) -> SamplerConfig:
    applied, _ = apply_otel_env(config if config is not None else load_config(), environ)
    return applied


def notes(environ: dict[str, str]) -> list[str]:
    return apply_otel_env(load_config(), environ)[1]


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "file://agent-sampler-kept.jsonl"),
        ({f"{E}ENDPOINT": "http://collector:4318"}, "http://collector:4318"),
        ({f"{E}ENDPOINT": "http://collector"}, "http://collector:80"),
        ({f"{E}ENDPOINT": "https://api.example.com/otlp"}, "https://api.example.com:443/otlp"),
        ({f"{E}ENDPOINT": "HTTP://[::1]:4318/"}, "http://[::1]:4318/"),
        ({f"{E}TRACES_ENDPOINT": "http://h:4318/v1/traces"}, "http://h:4318/v1/traces"),
        (
            {f"{E}ENDPOINT": "http://general:4318", f"{E}TRACES_ENDPOINT": "http://traces:4318"},
            "http://traces:4318",
        ),
        ({f"{E}ENDPOINT": "http://h:4317", f"{E}PROTOCOL": "grpc"}, "grpc://h:4317"),
        ({f"{E}ENDPOINT": "https://h:4317", f"{E}PROTOCOL": "grpc"}, "grpcs://h:4317"),
        ({f"{E}ENDPOINT": "https://h", f"{E}PROTOCOL": "grpc"}, "grpcs://h:443"),
        ({f"{E}ENDPOINT": "http://[::1]:4317", f"{E}PROTOCOL": "grpc"}, "grpc://[::1]:4317"),
        ({f"{E}ENDPOINT": "h:4317", f"{E}PROTOCOL": "grpc"}, "grpcs://h:4317"),
        (
            {f"{E}ENDPOINT": "h:4317", f"{E}PROTOCOL": "grpc", f"{E}INSECURE": "TRUE"},
            "grpc://h:4317",
        ),
        (
            {f"{E}ENDPOINT": "http://h:4317", f"{E}TRACES_PROTOCOL": "grpc"},
            "grpc://h:4317",
        ),
        ({f"{E}ENDPOINT": "http://h:4318", f"{E}PROTOCOL": "http/protobuf"}, "http://h:4318"),
        ({f"{E}ENDPOINT": "", f"{E}PROTOCOL": "grpc"}, "file://agent-sampler-kept.jsonl"),
    ],
    ids=[
        "nothing-set",
        "http-base",
        "http-default-port",
        "https-path",
        "ipv6-uppercase-scheme",
        "traces-endpoint",
        "traces-endpoint-wins",
        "grpc-http-scheme-is-plaintext",
        "grpc-https-scheme-is-tls",
        "grpc-https-default-port",
        "grpc-ipv6",
        "grpc-host-port-is-tls",
        "grpc-host-port-insecure",
        "traces-protocol",
        "http-protobuf",
        "empty-is-unset",
    ],
)
def test_the_endpoint_and_protocol_set_the_url(environ: dict[str, str], url: str) -> None:
    assert from_env(environ).exporter.url == url


@pytest.mark.parametrize(
    ("environ", "key", "value"),
    [
        ({f"{E}HEADERS": "api-key=s3cret"}, "headers", (("api-key", "s3cret"),)),
        (
            {f"{E}HEADERS": " Authorization = Bearer%20t0k , x-tenant=a%2Cb "},
            "headers",
            (("Authorization", "Bearer t0k"), ("x-tenant", "a,b")),
        ),
        (
            {f"{E}HEADERS": "a=1", f"{E}TRACES_HEADERS": "b=2"},
            "headers",
            (("b", "2"),),
        ),
        ({f"{E}HEADERS": "k=v=w"}, "headers", (("k", "v=w"),)),
        ({f"{E}COMPRESSION": "none"}, "compression", "none"),
        ({f"{E}COMPRESSION": "GZIP"}, "compression", "gzip"),
        ({f"{E}TIMEOUT": "2500"}, "timeout", 2.5),
        ({f"{E}TIMEOUT": "10000", f"{E}TRACES_TIMEOUT": "500"}, "timeout", 0.5),
    ],
    ids=[
        "header",
        "headers-trimmed-and-percent-decoded",
        "traces-headers-win",
        "equals-in-value",
        "compression-none",
        "compression-any-case",
        "timeout-in-milliseconds",
        "traces-timeout-wins",
    ],
)
def test_headers_compression_and_timeout(environ: dict[str, str], key: str, value: Any) -> None:
    assert getattr(from_env(environ).exporter, key) == value


@pytest.mark.parametrize(
    ("environ", "variable", "says"),
    [
        ({f"{E}ENDPOINT": "collector:4318"}, f"{E}ENDPOINT", "expected http or https"),
        ({f"{E}ENDPOINT": "ftp://h:21"}, f"{E}ENDPOINT", "expected http or https"),
        ({f"{E}ENDPOINT": "http://h:99999"}, f"{E}ENDPOINT", "not a URL"),
        (
            {f"{E}ENDPOINT": "h", f"{E}PROTOCOL": "grpc"},
            f"{E}ENDPOINT",
            "not an endpoint the sampler can use for grpc",
        ),
        ({f"{E}PROTOCOL": "http/json"}, f"{E}PROTOCOL", "http/json is not supported"),
        ({f"{E}PROTOCOL": "thrift"}, f"{E}PROTOCOL", "expected one of grpc, http/protobuf"),
        ({f"{E}COMPRESSION": "zstd"}, f"{E}COMPRESSION", "expected gzip or none"),
        ({f"{E}TIMEOUT": "10s"}, f"{E}TIMEOUT", "milliseconds above 0"),
        ({f"{E}TIMEOUT": "0"}, f"{E}TIMEOUT", "milliseconds above 0"),
        ({f"{E}HEADERS": "novalue"}, f"{E}HEADERS", "entry 1 is not key=value"),
        ({f"{E}HEADERS": "bad key=v"}, f"{E}HEADERS", "entry 1 is not key=value"),
        ({f"{E}CERTIFICATE": "/nonexistent/ca.pem"}, f"{E}CERTIFICATE", "cannot read"),
    ],
    ids=[
        "http-without-scheme",
        "unknown-scheme",
        "port-out-of-range",
        "grpc-without-port",
        "http-json",
        "unknown-protocol",
        "unknown-compression",
        "timeout-with-unit",
        "timeout-zero",
        "header-without-equals",
        "header-name-with-space",
        "certificate-missing",
    ],
)
def test_a_value_that_cannot_be_used_is_reported_and_ignored(
    environ: dict[str, str], variable: str, says: str
) -> None:
    config = from_env(environ)
    [note] = notes(environ)
    assert note.startswith(f"{variable} ignored: ") and says in note
    assert config.exporter == load_config().exporter


def test_a_bad_header_entry_is_dropped_and_the_others_used() -> None:
    environ = {f"{E}HEADERS": "a=1,oops,b=2"}
    assert from_env(environ).exporter.headers == (("a", "1"), ("b", "2"))
    assert notes(environ) == [
        f"{E}HEADERS ignored: entry 2 is not key=value (the other entries are used)"
    ]


def test_reports_never_quote_a_value() -> None:
    secret = "Zm9vYmFyLXNlY3JldC10b2tlbi0xMjM0NQ"
    environ = {
        f"{E}HEADERS": f"ok=1,{secret}",
        f"{E}ENDPOINT": f"{secret}:4318",
        f"{E}TIMEOUT": secret,
    }
    reported = notes(environ)
    assert len(reported) == 3
    assert not any(secret in note for note in reported)


def test_a_traces_endpoint_whose_path_cannot_be_used_as_it_is_is_reported() -> None:
    environ = {f"{E}TRACES_ENDPOINT": "https://h/api/spans"}
    assert from_env(environ).exporter.url == "https://h:443/api/spans"
    [note] = notes(environ)
    assert "/v1/traces appended" in note


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def test_certificates_serve_a_tls_downstream(certs: Certificates) -> None:
    environ = {
        f"{E}ENDPOINT": "https://h:4317",
        f"{E}PROTOCOL": "grpc",
        f"{E}CERTIFICATE": str(certs.ca),
        f"{E}CLIENT_CERTIFICATE": str(certs.client_cert),
        f"{E}CLIENT_KEY": str(certs.client_key),
    }
    tls = from_env(environ).exporter.tls
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (
        str(certs.ca),
        str(certs.client_cert),
        str(certs.client_key),
    )
    assert notes(environ) == []


def test_certificates_are_ignored_for_a_downstream_without_tls(certs: Certificates) -> None:
    environ = {f"{E}ENDPOINT": "http://h:4318", f"{E}CERTIFICATE": str(certs.ca)}
    config = from_env(environ)
    assert config.exporter.tls == load_config().exporter.tls
    assert notes(environ) == [f"{E}CERTIFICATE ignored: the downstream does not use TLS"]
    exporter_from_url(config.exporter.url, exporter_settings(config))  # usable as it is


def test_a_client_certificate_without_its_key_is_ignored(certs: Certificates) -> None:
    environ = {f"{E}ENDPOINT": "https://h", f"{E}CLIENT_CERTIFICATE": str(certs.client_cert)}
    assert from_env(environ).exporter.tls.cert_file == ""
    [note] = notes(environ)
    assert note.startswith(f"{E}CLIENT_CERTIFICATE ignored: a client certificate needs its key")


# -- precedence: defaults < environment < config file < flags ----------------------------------

ENV = {
    f"{E}ENDPOINT": "http://from-env:4318",
    f"{E}HEADERS": "x-from=env",
    f"{E}COMPRESSION": "none",
    f"{E}TIMEOUT": "3000",
}


def test_the_environment_is_below_the_config_file_key_by_key() -> None:
    file = load_config_text(
        "exporter: {url: 'grpc://from-file:4317', headers: {x-from: file}}\n" + RULES, "c.yaml"
    )
    config = from_env(ENV, file)
    e = config.exporter
    assert (e.url, e.headers) == ("grpc://from-file:4317", (("x-from", "file"),))
    assert (e.compression, e.timeout) == ("none", 3.0)  # keys the file left alone
    assert config.origin("exporter.url") == "config file c.yaml"
    assert config.origin("exporter.compression") == f"environment: {E}COMPRESSION"


def test_the_embedded_default_config_is_below_the_environment() -> None:
    config = from_env(ENV)  # load_config(): no --config
    assert config.exporter.url == "http://from-env:4318"
    assert config.origin("exporter.url") == f"environment: {E}ENDPOINT"


def test_the_flags_are_above_the_environment() -> None:
    args = build_parser().parse_args(["run", "--downstream", "grpc://from-flag:4317"])
    config = from_env(ENV, apply_overrides(load_config(), args))
    assert config.exporter.url == "grpc://from-flag:4317"
    assert config.origin("exporter.url") == "flag --downstream"
    assert config.exporter.headers == (("x-from", "env"),)


@pytest.mark.parametrize(
    ("environ", "origin"),
    [
        ({}, "default"),
        (
            {f"{E}ENDPOINT": "http://h:4317", f"{E}PROTOCOL": "grpc"},
            f"environment: {E}ENDPOINT, {E}PROTOCOL",
        ),
        ({f"{E}TRACES_ENDPOINT": "http://h:4318"}, f"environment: {E}TRACES_ENDPOINT"),
    ],
    ids=["default", "endpoint-and-protocol", "traces-endpoint"],
)
def test_the_origin_of_the_downstream_names_the_variables(
    environ: dict[str, str], origin: str
) -> None:
    assert from_env(environ).origin("exporter.url") == origin


# -- delivered through exporters built from the environment, to real servers on loopback ------


def test_http_protobuf_from_the_environment_delivers_with_its_headers() -> None:
    async def scenario() -> HttpCollector:
        async with HttpCollector(path="/otlp/v1/traces") as collector:
            config = from_env(
                {
                    f"{E}ENDPOINT": f"{collector.base_url}/otlp",
                    f"{E}HEADERS": "x-api-key=k%3D1",
                }
            )
            exporter = exporter_from_url(config.exporter.url, exporter_settings(config))
            await exporter.start()
            assert exporter.try_submit(make_request("a", 2), 2)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return collector

    collector = run(scenario())
    assert span_names(collector.requests) == expected_names(("a", 2))
    assert collector.headers[0]["x-api-key"] == "k=1"
    assert collector.headers[0]["Content-Encoding"] == "gzip"


def test_grpc_over_tls_from_the_environment_delivers(certs: Certificates, tmp_path: Path) -> None:
    from sampler.tls import ServerTls

    async def scenario() -> GrpcCollector:
        credentials = ServerTls(str(certs.server_cert), str(certs.server_key)).grpc_credentials()
        async with GrpcCollector(credentials) as collector:
            config = from_env(
                {
                    f"{E}ENDPOINT": f"https://localhost:{collector.port}",
                    f"{E}PROTOCOL": "grpc",
                    f"{E}CERTIFICATE": str(certs.ca),
                    f"{E}HEADERS": "authorization=Bearer%20t0k",
                }
            )
            assert config.exporter.url == f"grpcs://localhost:{collector.port}"
            exporter = exporter_from_url(config.exporter.url, exporter_settings(config))
            await exporter.start()
            assert exporter.try_submit(make_request("a", 3), 3)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return collector

    collector = run(scenario())
    assert span_names(collector.requests) == expected_names(("a", 3))
    assert collector.metadata[0]["authorization"] == "Bearer t0k"
