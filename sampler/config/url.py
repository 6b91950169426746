"""Downstream URLs (`grpc(s)://HOST:PORT`, `http(s)://HOST[:PORT][/path]`, `file://PATH`), parsed
once, without importing any transport, so `check-config` and the exporter factory agree.

The scheme alone says whether the connection is encrypted: `grpcs` and `https` use TLS (set up
by `exporter.tls`, else the system's trusted roots), `grpc` and `http` never do."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

ACCEPTED_FORMS = (
    "grpc://HOST:PORT, grpcs://HOST:PORT (TLS), http://HOST:PORT[/path], "
    "https://HOST[:PORT][/path] "
    "or file://PATH (file://./out.jsonl and file://out.jsonl are relative, "
    "file:///abs/out.jsonl is absolute)"
)


@dataclass(frozen=True, slots=True)
class Downstream:
    scheme: str  # "grpc" | "grpcs" | "http" | "https" | "file"
    target: str  # HOST:PORT for grpc(s), the whole URL for http(s), the path for file

    @property
    def secure(self) -> bool:
        return self.scheme in SECURE_SCHEMES


SECURE_SCHEMES = frozenset({"grpcs", "https"})


def parse_downstream(url: str) -> Downstream:
    """Raises ValueError naming the URL and the accepted forms when it cannot be used."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise _bad(url, "no scheme")
    if scheme == "file":
        # Not urlsplit: in file://./x.jsonl it would take "." for a host.
        if not rest:
            raise _bad(url, "empty path")
        return Downstream("file", rest)
    if scheme not in ("grpc", "grpcs", "http", "https"):
        raise _bad(url, f"unknown scheme {scheme!r}")

    parts = urlsplit(url)
    port = _port(url, parts)
    if not parts.hostname:
        raise _bad(url, "missing host")
    if parts.query or parts.fragment:
        raise _bad(url, "query strings and fragments are not supported")
    if "@" in parts.netloc:
        raise _bad(url, "credentials in the URL are not supported; pass them as headers")
    if scheme in ("grpc", "grpcs"):
        if port is None:
            raise _bad(url, "missing port")
        if parts.path not in ("", "/"):
            raise _bad(url, "a gRPC endpoint takes no path")
        return Downstream(scheme, parts.netloc)
    if port is None and scheme == "http":
        raise _bad(url, "missing port")
    return Downstream(scheme, url)


def _port(url: str, parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError as err:  # non-numeric or out of range
        raise _bad(url, f"invalid port ({err})") from None


def _bad(url: str, problem: str) -> ValueError:
    return ValueError(f"downstream URL {url!r}: {problem}; expected {ACCEPTED_FORMS}")
