"""The sampler's three listening addresses, checked before anything starts.

A port already in use (or one the process may not bind) would otherwise surface as whichever
server's own error: grpc core's log line and a hint about GRPC_VERBOSITY, an ``[Errno 98]``
from aiohttp, the metrics listener not named at all. Checked first, it stops the sampler with
one line naming the listener, its address and the setting that chose it. The servers still
report what the check cannot foresee (a port taken between the check and the bind).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from sampler.config.model import SamplerConfig
from sampler.receive.address import ListenAddress, parse_listen

# bind errors that binding again would meet too, whatever the server
_DECISIVE = {errno.EADDRINUSE: "address already in use", errno.EACCES: "permission denied"}
_WILDCARDS = {"0.0.0.0", "::"}


@dataclass(frozen=True, slots=True)
class Listener:
    name: str  # "OTLP/gRPC", "OTLP/HTTP", "metrics"
    listen: str  # HOST:PORT as configured
    setting: str  # where it is set: the config key and the flag


class ListenError(OSError):
    """A listener cannot bind its address; ``str()`` is the one line to show."""

    def __init__(self, listener: Listener, reason: str) -> None:
        super().__init__(
            f"the {listener.name} listener cannot bind {listener.listen}: {reason} "
            f"(set by {listener.setting})"
        )
        self.listener = listener


def listeners_of(config: SamplerConfig) -> list[Listener]:
    """The listeners turned on (an empty address turns one off)."""
    found = [
        Listener("OTLP/gRPC", config.receivers.grpc.listen, "receivers.grpc.listen or --listen"),
        Listener(
            "OTLP/HTTP", config.receivers.http.listen, "receivers.http.listen or --http-listen"
        ),
        Listener("metrics", config.metrics.listen, "metrics.listen or --metrics-listen"),
    ]
    return [listener for listener in found if listener.listen]


def check_listeners(listeners: Iterable[Listener]) -> None:
    """Raises ListenError for the first listener that cannot bind: its address is another
    listener's, or is in use, or is a port the process may not bind. Port 0 (any free port)
    is not checked."""
    taken: list[tuple[ListenAddress, Listener]] = []
    for listener in listeners:
        address = parse_listen(listener.listen)
        if address.port == 0:
            continue
        for other_address, other in taken:
            if other_address.port == address.port and _overlap(other_address, address):
                raise ListenError(listener, f"the {other.name} listener is set to {other.listen}")
        taken.append((address, listener))
        reason = bind_problem(address)
        if reason:
            raise ListenError(listener, reason)


def bind_problem(address: ListenAddress) -> str:
    """Why binding ``address`` fails now ("address already in use", "permission denied"), or
    "" when it does not, or for a reason left to the server to report (a host that does not
    resolve or is not local)."""
    try:
        found = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return ""
    for family, kind, proto, _, sockaddr in found:
        try:
            with socket.socket(family, kind, proto) as probe:
                # as the servers bind: a port whose last connections are in TIME_WAIT is free
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno in _DECISIVE:
                return _DECISIVE[exc.errno]
    return ""


def _overlap(a: ListenAddress, b: ListenAddress) -> bool:
    return a.host == b.host or a.host in _WILDCARDS or b.host in _WILDCARDS
