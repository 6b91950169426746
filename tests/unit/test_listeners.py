"""The listening addresses are checked before anything starts, with real sockets on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from sampler.config.load import load_config_text
from sampler.config.model import SamplerConfig
from sampler.listeners import Listener, ListenError, check_listeners, listeners_of


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listeners(grpc: str, http: str, metrics: str) -> list[Listener]:
    config = load_config_text(
        f"receivers: {{grpc: {{listen: '{grpc}'}}, http: {{listen: '{http}'}}}}\n"
        f"metrics: {{listen: '{metrics}'}}\n"
        "rules: [{name: all, action: keep}]\n",
        "test.yaml",
    )
    return listeners_of(config)


@pytest.mark.parametrize(
    ("busy", "name", "setting"),
    [
        (0, "OTLP/gRPC", "receivers.grpc.listen or --listen"),
        (1, "OTLP/HTTP", "receivers.http.listen or --http-listen"),
        (2, "metrics", "metrics.listen or --metrics-listen"),
    ],
    ids=["grpc", "http", "metrics"],
)
def test_a_port_in_use_names_the_listener_and_its_address(
    busy_port: int, busy: int, name: str, setting: str
) -> None:
    addresses = ["127.0.0.1:0"] * 3
    addresses[busy] = f"127.0.0.1:{busy_port}"
    with pytest.raises(ListenError) as caught:
        check_listeners(listeners(*addresses))
    assert str(caught.value) == (
        f"the {name} listener cannot bind 127.0.0.1:{busy_port}: address already in use "
        f"(set by {setting})"
    )
    assert caught.value.listener.name == name


def test_two_listeners_on_one_port_are_refused_before_binding() -> None:
    port = free_port()
    with pytest.raises(ListenError, match=r"^the metrics listener cannot bind 0\.0\.0\.0:\d+: "):
        check_listeners(listeners(f"127.0.0.1:{port}", "127.0.0.1:0", f"0.0.0.0:{port}"))


def test_free_ports_and_any_port_pass_and_stay_free() -> None:
    grpc, http = free_port(), free_port()
    check_listeners(listeners(f"127.0.0.1:{grpc}", f"127.0.0.1:{http}", "127.0.0.1:0"))
    with socket.socket() as sock:  # the check holds nothing
        sock.bind(("127.0.0.1", grpc))


def test_a_listener_turned_off_is_not_checked() -> None:
    config = SamplerConfig()
    assert [listener.name for listener in listeners_of(config)] == [
        "OTLP/gRPC",
        "OTLP/HTTP",
        "metrics",
    ]
    off = listeners("127.0.0.1:0", "", "127.0.0.1:0")
    assert [listener.name for listener in off] == ["OTLP/gRPC", "metrics"]
