"""API_TOKENS entries: `name:role:token` or a bare admin token named by its position."""

from __future__ import annotations

import pytest

from services.api.auth import ApiToken, find_token, parse_api_tokens
from services.api.principal import Role


def test_bare_tokens_are_admins_named_by_position() -> None:
    assert parse_api_tokens(["alpha", "ci:viewer:beta", "gamma"]) == [
        ApiToken("token-1", Role.ADMIN, "alpha"),
        ApiToken("ci", Role.VIEWER, "beta"),
        ApiToken("token-3", Role.ADMIN, "gamma"),
    ]


def test_named_entries_take_their_role_and_the_token_may_hold_colons() -> None:
    assert parse_api_tokens(["deploy:admin:a:b:c", " ops : viewer :x"]) == [
        ApiToken("deploy", Role.ADMIN, "a:b:c"),
        ApiToken("ops", Role.VIEWER, "x"),
    ]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["ci:owner:secret-1"], "role must be admin or viewer"),
        (["ci:admin:"], "expected name:role:token"),
        (["ci:admin"], "expected name:role:token"),
        ([":admin:secret-1"], "expected name:role:token"),
        (["a:admin:x", "a:viewer:y"], "same name"),
        (["a:admin:x", "b:viewer:x"], "same token"),
        (["x", "token-1:viewer:y"], "same name"),
    ],
)
def test_malformed_entries_are_refused_without_quoting_the_secret(
    entries: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_api_tokens(entries)
    assert "secret-1" not in str(raised.value)


def test_find_token_matches_whole_tokens_only() -> None:
    tokens = parse_api_tokens(["alpha", "ci:viewer:beta"])
    assert find_token("beta", tokens) == tokens[1]
    assert find_token("alpha", tokens) == tokens[0]
    for wrong in ("alph", "alphaa", "ALPHA", "ci:viewer:beta", ""):
        assert find_token(wrong, tokens) is None


def test_the_secret_is_not_in_the_repr() -> None:
    assert "beta" not in repr(parse_api_tokens(["ci:viewer:beta"]))
