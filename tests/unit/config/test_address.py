import pytest

from sampler.config.address import ListenAddress, parse_listen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:4317", ListenAddress("127.0.0.1", 4317)),
        ("0.0.0.0:0", ListenAddress("0.0.0.0", 0)),
        ("localhost:4318", ListenAddress("localhost", 4318)),
        ("[::1]:4317", ListenAddress("::1", 4317)),
        ("[::]:65535", ListenAddress("::", 65535)),
    ],
    ids=["ipv4", "any-ephemeral", "name", "ipv6-loopback", "ipv6-any"],
)
def test_parse_listen_accepts_host_port(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text",
    ["4317", ":4317", "::1:4317", "[::1]", "[]:4317", "host:", "host:70000", "host:-1", "h:4x"],
    ids=[
        "no-host",
        "empty-host",
        "bare-ipv6",
        "no-port",
        "empty-brackets",
        "empty-port",
        "port-too-big",
        "negative-port",
        "port-not-number",
    ],
)
def test_parse_listen_rejects_malformed_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="listen address"):
        parse_listen(text)
