"""BearerAuth: which Authorization values pass, and that the token never shows."""

from __future__ import annotations

import pytest

from sampler.receive.auth import BearerAuth

TOKEN = "abc.DEF-123_~+/="


@pytest.mark.parametrize(
    ("authorization", "allowed"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"BEARER  {TOKEN} ", True),
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        (TOKEN, False),
        (f"Basic {TOKEN}", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Bearer {TOKEN}x", False),
        ("Bearer tökén", False),
    ],
    ids=[
        "right",
        "scheme-lowercase",
        "extra-spaces",
        "absent",
        "empty",
        "scheme-only",
        "scheme-and-space",
        "token-without-scheme",
        "other-scheme",
        "prefix-of-token",
        "token-plus-more",
        "non-ascii",
    ],
)
def test_allows(authorization: str | None, allowed: bool) -> None:
    assert BearerAuth(TOKEN).allows(authorization) is allowed


def test_the_token_is_not_in_the_repr() -> None:
    assert TOKEN not in repr(BearerAuth(TOKEN))


def test_an_empty_token_is_refused() -> None:
    with pytest.raises(ValueError):
        BearerAuth("")
