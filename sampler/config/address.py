"""Parsing of `HOST:PORT` listen addresses (IPv6 hosts in brackets: `[::1]:4317`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str  # without brackets, e.g. "::1"
    port: int  # 0 asks the OS for an ephemeral port

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"{host}:{self.port}"


def parse_listen(listen: str) -> ListenAddress:
    """Parse `HOST:PORT` or `[IPV6]:PORT`; raise ValueError with the offending text."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"listen address {listen!r}: an IPv6 host must be in brackets")
    if not host or "[" in host or "]" in host:
        raise ValueError(f"listen address {listen!r} has an invalid host")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen address {listen!r} has an invalid port {port_text!r}")
    return ListenAddress(host, int(port_text))
