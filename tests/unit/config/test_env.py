"""`${env:NAME}` in the YAML: replaced in every string value, as the OpenTelemetry Collector
does; a missing variable is a config error naming the key and the variable; a value that came
from the environment is never repeated in an error message."""

from __future__ import annotations

import pytest

from sampler.config.reader import ConfigError, expand_env
from sampler.config_file import load_config_text

RULES = "rules: [{name: all, action: keep}]\n"
SECRET = "Zm9vYmFyLXNlY3JldC10b2tlbi0xMjM0NQ"  # distinctive: easy to spot in any output


@pytest.mark.parametrize(
    ("text", "environ", "expanded", "names"),
    [
        ("${env:A}", {"A": "x"}, "x", ("A",)),
        ("Bearer ${env:TOKEN}", {"TOKEN": "t0k"}, "Bearer t0k", ("TOKEN",)),
        ("${env:A}-${env:B}-${env:A}", {"A": "1", "B": "2"}, "1-2-1", ("A", "B")),
        ("${env:UNSET:-fallback}", {}, "fallback", ("UNSET",)),
        ("${env:SET:-fallback}", {"SET": "value"}, "value", ("SET",)),
        ("${env:EMPTY}", {"EMPTY": ""}, "", ("EMPTY",)),
        ("$${env:A}", {"A": "x"}, "${env:A}", ()),
        ("^a.*$", {}, "^a.*$", ()),
        ("${other:A}", {"A": "x"}, "${other:A}", ()),
    ],
    ids=[
        "whole-value",
        "inside-text",
        "several",
        "default-used",
        "default-unused",
        "set-but-empty",
        "escaped",
        "plain-dollar",
        "other-provider-untouched",
    ],
)
def test_expand_env(
    text: str, environ: dict[str, str], expanded: str, names: tuple[str, ...]
) -> None:
    assert expand_env(text, environ) == (expanded, names)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${env:MISSING}", "environment variable MISSING is not set (from ${env:MISSING})"),
        ("${env:}", "invalid reference ${env:}"),
        ("${env:9LIVES}", "invalid reference ${env:9LIVES}"),
        ("${env:A B}", "invalid reference ${env:A B}"),
    ],
    ids=["unset", "empty-name", "leading-digit", "space"],
)
def test_expand_env_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        expand_env(text, {"A": "x"})
    assert str(caught.value).startswith(message)


def test_env_values_reach_every_kind_of_string_key() -> None:
    config = load_config_text(
        "receivers:\n"
        "  grpc: {listen: '${env:GRPC_LISTEN}'}\n"
        "  auth: {bearer_token: '${env:TOKEN}'}\n"
        "exporter:\n"
        "  url: ${env:DOWNSTREAM}\n"
        "  timeout: ${env:TIMEOUT}\n"
        "  headers: {authorization: 'Bearer ${env:TOKEN}'}\n"
        "rules:\n"
        "  - name: by-env\n"
        "    when: {attribute: {key: deployment.environment, equals: '${env:STAGE}'}}\n"
        "    action: keep\n",
        "c.yaml",
        {
            "GRPC_LISTEN": "127.0.0.1:14317",
            "TOKEN": SECRET,
            "DOWNSTREAM": "grpcs://backend:4317",
            "TIMEOUT": "3s",
            "STAGE": "prod",
        },
    )
    assert config.receivers.grpc.listen == "127.0.0.1:14317"
    assert config.receivers.auth.bearer_token == SECRET
    assert (config.exporter.url, config.exporter.timeout) == ("grpcs://backend:4317", 3.0)
    assert config.exporter.headers == (("authorization", f"Bearer {SECRET}"),)
    assert "prod" in repr(config.rules[0].condition)


def test_a_missing_variable_names_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("exporter:\n  url: ${env:NOT_SET_HERE}\n" + RULES, "c.yaml", {})
    (problem,) = caught.value.problems
    assert (problem.line, problem.key) == (2, "exporter.url")
    assert problem.message == (
        "environment variable NOT_SET_HERE is not set (from ${env:NOT_SET_HERE})"
    )


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("receivers: {auth: {bearer_token: '${env:V}'}}\n", "receivers.auth.bearer_token"),
        ("exporter: {url: '${env:V}'}\n", "exporter.url"),
        ("exporter: {compression: '${env:V}'}\n", "exporter.compression"),
        ("exporter: {timeout: '${env:V}'}\n", "exporter.timeout"),
        ("receivers: {grpc: {listen: '${env:V}'}}\n", "receivers.grpc.listen"),
        ("receivers: {tls: {cert_file: '${env:V}', key_file: k}}\n", "receivers.tls.cert_file"),
        ("sessions: {max_session_spans: '${env:V}'}\n", "sessions.max_session_spans"),
    ],
    ids=["token", "url", "choice", "duration", "listen", "file", "int"],
)
def test_a_bad_value_from_the_environment_is_reported_without_its_content(
    yaml_text: str, key: str
) -> None:
    bad = f"{SECRET} not-valid-anywhere"
    with pytest.raises(ConfigError) as caught:
        load_config_text(yaml_text + RULES, "c.yaml", {"V": bad})
    messages = [str(p) for p in caught.value.problems]
    assert any(f"{key}: " in m and "${env:V}" in m for m in messages), messages
    assert not any(SECRET in m for m in messages), messages


def test_a_bad_literal_secret_is_not_repeated_either() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(f"receivers: {{auth: {{bearer_token: '{SECRET} x'}}}}\n" + RULES, "c")
    assert SECRET not in str(caught.value)
    assert "(not shown: a secret)" in str(caught.value)


def test_secrets_stay_out_of_the_config_repr() -> None:
    config = load_config_text(
        "receivers: {auth: {bearer_token: '${env:T}'}}\n"
        "exporter: {headers: {x-api-key: '${env:T}'}}\n" + RULES,
        "c.yaml",
        {"T": SECRET},
    )
    assert config.receivers.auth.bearer_token == SECRET
    assert SECRET not in repr(config)
