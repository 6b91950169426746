"""The OpenTelemetry SDKs' ``OTEL_EXPORTER_OTLP_*`` variables, as defaults for the downstream.

Read as the SDKs read them (the OTLP exporter specification), each variable fills in the one
``exporter`` key it stands for, and only a key that neither the config file nor a flag set:
defaults < environment < config file < flags. The signal-specific ``OTEL_EXPORTER_OTLP_TRACES_*``
wins over the general one; an empty variable is as good as unset.

- ``_ENDPOINT`` / ``_TRACES_ENDPOINT`` -> ``url``, read with ``_PROTOCOL``: ``http/protobuf``
  (the default) takes ``http(s)://HOST[:PORT][/path]``; ``grpc`` takes the same, ``https``
  meaning TLS, or ``HOST:PORT`` (TLS unless ``_INSECURE=true``);
- ``_HEADERS`` -> ``headers``: ``key=value,key2=value2``, percent-decoded;
- ``_COMPRESSION`` -> ``compression``: ``gzip`` or ``none``;
- ``_TIMEOUT`` -> ``timeout``: milliseconds;
- ``_CERTIFICATE``, ``_CLIENT_CERTIFICATE``, ``_CLIENT_KEY`` -> ``tls.ca_file``,
  ``tls.cert_file``, ``tls.key_file``: PEM files, used only when the downstream uses TLS.

A value that cannot be used is not fatal: it is reported (as the SDKs do, with a warning) and
ignored, and the startup line says where the downstream came from. Values are never quoted in
those reports: headers carry credentials.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from sampler.config.binder import pem_file_problem
from sampler.config.model import SamplerConfig
from sampler.export.url import parse_downstream

PREFIX = "OTEL_EXPORTER_OTLP_"
PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_PROTOCOL = "http/protobuf"  # the specification's default for the SDKs
TRACES_PATH = "/v1/traces"


@dataclass(slots=True)
class _Reading:
    """What the environment gives, key by key, and what it said that could not be used."""

    environ: Mapping[str, str]
    values: dict[str, tuple[Any, str]] = field(default_factory=dict)  # key -> (value, variable)
    notes: list[str] = field(default_factory=list)

    def get(self, option: str) -> tuple[str, str] | None:
        """(value, variable name) of ``OTEL_EXPORTER_OTLP_TRACES_<option>``, else of
        ``OTEL_EXPORTER_OTLP_<option>``; None when both are unset or empty."""
        for name in (f"{PREFIX}TRACES_{option}", f"{PREFIX}{option}"):
            value = self.environ.get(name, "").strip()
            if value:
                return value, name
        return None

    def ignore(self, name: str, why: str) -> None:
        self.notes.append(f"{name} ignored: {why}")


def apply_otel_env(
    config: SamplerConfig, environ: Mapping[str, str]
) -> tuple[SamplerConfig, list[str]]:
    """``config`` with the downstream keys it has at their defaults taken from ``environ``, and
    one note for each variable that could not be used (for the log, as warnings)."""
    reading = _Reading(environ)
    _read_endpoint(reading)
    _read_headers(reading)
    _read_compression(reading)
    _read_timeout(reading)
    for option, key, pem in (
        ("CERTIFICATE", "tls.ca_file", "certificate"),
        ("CLIENT_CERTIFICATE", "tls.cert_file", "certificate"),
        ("CLIENT_KEY", "tls.key_file", "key"),
    ):
        _read_pem_file(reading, option, key, pem)

    wanted = {
        key: found
        for key, found in reading.values.items()
        if config.origin(f"exporter.{key}") == "default"
    }
    url = wanted["url"][0] if "url" in wanted else config.exporter.url
    _keep_tls_only_for_tls(reading, wanted, url, config)

    exporter = config.exporter
    tls = exporter.tls
    for key, (value, _) in wanted.items():
        if key.startswith("tls."):
            tls = dataclasses.replace(tls, **{key.removeprefix("tls."): value})
        else:
            exporter = dataclasses.replace(exporter, **{key: value})
    config = dataclasses.replace(config, exporter=dataclasses.replace(exporter, tls=tls))
    for key, (_, variable) in wanted.items():
        config = config.set_by(f"environment: {variable}", f"exporter.{key}")
    return config, reading.notes


def _read_endpoint(reading: _Reading) -> None:
    protocol = DEFAULT_PROTOCOL
    found_protocol = reading.get("PROTOCOL")
    if found_protocol is not None:
        value, name = found_protocol
        if value in PROTOCOLS:
            protocol = value
        elif value == "http/json":
            reading.ignore(name, "http/json is not supported; using http/protobuf")
        else:
            reading.ignore(name, f"expected one of {', '.join(PROTOCOLS)}")
    found = reading.get("ENDPOINT")
    if found is None:
        return
    value, name = found
    url = _grpc_url(reading, value, name) if protocol == "grpc" else _http_url(reading, value, name)
    if url is None:
        return
    try:
        parse_downstream(url)
    except ValueError:
        reading.ignore(name, f"not an endpoint the sampler can use for {protocol}")
        return
    variables = name if found_protocol is None else f"{name}, {found_protocol[1]}"
    reading.values["url"] = (url, variables)


def _grpc_url(reading: _Reading, value: str, name: str) -> str | None:
    """``grpc(s)://HOST:PORT`` for an OTLP/gRPC endpoint as the SDKs take it."""
    if "://" not in value:  # HOST:PORT, as gRPC itself takes it
        insecure = _insecure(reading)
        return f"{'grpc' if insecure else 'grpcs'}://{value}"
    parts = _split(reading, value, name, ("http", "https"))
    if parts is None:
        return None
    if parts.path not in ("", "/"):
        reading.ignore(name, "a gRPC endpoint takes no path (the path was left out)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    scheme = "grpcs" if parts.scheme == "https" else "grpc"
    return f"{scheme}://{_host(parts)}:{port}"


def _http_url(reading: _Reading, value: str, name: str) -> str | None:
    """The OTLP/HTTP base URL. ``exporter.url`` appends /v1/traces unless the path ends with
    it, which is what ``_ENDPOINT`` asks for; ``_TRACES_ENDPOINT`` names the full URL, which
    only a path ending in /v1/traces can say (reported otherwise)."""
    parts = _split(reading, value, name, ("http", "https"))
    if parts is None:
        return None
    path = parts.path.rstrip("/")
    if name.endswith("TRACES_ENDPOINT") and path and not path.endswith(TRACES_PATH):
        reading.notes.append(
            f"{name}: the sampler sends to its path with {TRACES_PATH} appended (as exporter.url "
            "does); a path that does not end with it cannot be used as it is"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{_host(parts)}:{port}{parts.path}"


def _split(
    reading: _Reading, value: str, name: str, schemes: tuple[str, ...]
) -> SplitResult | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        reading.ignore(name, "not a URL")
        return None
    if parts.scheme.lower() not in schemes or not parts.hostname:
        reading.ignore(name, f"expected {' or '.join(schemes)}://HOST[:PORT]")
        return None
    return parts._replace(scheme=parts.scheme.lower())


def _host(parts: SplitResult) -> str:
    host = parts.hostname or ""
    return f"[{host}]" if ":" in host else host


def _insecure(reading: _Reading) -> bool:
    found = reading.get("INSECURE")
    if found is None:
        return False
    value, name = found
    if value.lower() not in ("true", "false"):
        reading.ignore(name, "expected true or false")
    return value.lower() == "true"


def _read_headers(reading: _Reading) -> None:
    found = reading.get("HEADERS")
    if found is None:
        return
    value, name = found
    headers: list[tuple[str, str]] = []
    for number, entry in enumerate(value.split(","), start=1):
        key, sep, text = entry.partition("=")
        key = unquote(key).strip()
        if not entry.strip():
            continue
        text = unquote(text).strip()
        if not sep or not _is_token(key) or any(ord(c) < 32 or ord(c) == 127 for c in text):
            reading.ignore(name, f"entry {number} is not key=value (the other entries are used)")
            continue
        headers.append((key, text))
    if headers:
        reading.values["headers"] = (tuple(headers), name)


def _is_token(key: str) -> bool:
    """An HTTP header name (RFC 9110 token), which gRPC metadata keys are too (lowercased)."""
    return bool(key) and all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in key)


def _read_compression(reading: _Reading) -> None:
    found = reading.get("COMPRESSION")
    if found is None:
        return
    value, name = found
    if value.lower() in ("gzip", "none"):
        reading.values["compression"] = (value.lower(), name)
    else:
        reading.ignore(name, "expected gzip or none")


def _read_timeout(reading: _Reading) -> None:
    found = reading.get("TIMEOUT")
    if found is None:
        return
    value, name = found
    try:
        milliseconds = float(value)
    except ValueError:
        milliseconds = -1.0
    if not 0 < milliseconds < float("inf"):
        reading.ignore(name, "expected a number of milliseconds above 0")
        return
    reading.values["timeout"] = (milliseconds / 1000.0, name)


def _read_pem_file(reading: _Reading, option: str, key: str, pem: str) -> None:
    found = reading.get(option)
    if found is None:
        return
    path, name = found
    problem = pem_file_problem(path, pem)
    if problem:
        reading.ignore(name, problem)
        return
    reading.values[key] = (path, name)


def _keep_tls_only_for_tls(
    reading: _Reading, wanted: dict[str, tuple[Any, str]], url: str, config: SamplerConfig
) -> None:
    """TLS files from the environment serve a downstream that uses TLS, and a client
    certificate comes with its key."""
    tls_keys = [key for key in wanted if key.startswith("tls.")]
    if not tls_keys:
        return
    try:
        secure = parse_downstream(url).secure
    except ValueError:
        secure = False
    if not secure:
        for key in tls_keys:
            reading.ignore(wanted.pop(key)[1], "the downstream does not use TLS")
        return
    tls = config.exporter.tls
    cert = "tls.cert_file" in wanted or bool(tls.cert_file)
    key_file = "tls.key_file" in wanted or bool(tls.key_file)
    if cert != key_file:
        for key in ("tls.cert_file", "tls.key_file"):
            if key in wanted:
                reading.ignore(
                    wanted.pop(key)[1], "a client certificate needs its key: set both or neither"
                )
