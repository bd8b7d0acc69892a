"""PROVIDERS_FILE: parsing, validation with the line of each error, routes, the fallback,
secrets kept out of reprs, and the reloader keeping its last good configuration."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.providers import (
    FabriqueProvider,
    KannelProvider,
    ProvidersFileError,
    ProvidersSource,
    SmppProvider,
    parse_providers,
)

ISSUE_EXAMPLE = """\
providers:
  - name: stub                # [a-z0-9-]{1,32}, unique
    kind: fabrique
    url: http://127.0.0.1:8090/v1
    token_file: TOKEN_FILE
  - name: aggregator
    kind: smpp
    host: 127.0.0.1
    port: 2775
    system_id: mailing
    password_file: PASSWORD_FILE
    source_addr: MAILING
    binds: 1
    window: 32
    max_tps: 100
  - name: gateway
    kind: kannel
    url: http://127.0.0.1:13013/cgi-bin/sendsms
    username: mailing
    password: kannel-secret
    callback_secret: callback-secret
    source_addr: MAILING
    callback_base_url: http://127.0.0.1:8000
routes:
  - operators: ["900", "901", "902"]
    via: [aggregator, stub]
  - operators: ["*"]
    via: [gateway]
"""


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, Path]:
    token = tmp_path / "stub-token"
    token.write_text("stub-jwt\n")
    password = tmp_path / "smpp-password"
    password.write_text("s3cret\n")
    return {"TOKEN_FILE": token, "PASSWORD_FILE": password}


def example(secrets: dict[str, Path]) -> str:
    text = ISSUE_EXAMPLE
    for key, path in secrets.items():
        text = text.replace(key, str(path))
    return text


def error_of(text: str) -> ProvidersFileError:
    with pytest.raises(ProvidersFileError) as caught:
        parse_providers(textwrap.dedent(text), "providers.yaml")
    return caught.value


def test_the_issue_example_parses_with_defaults(secrets: dict[str, Path]) -> None:
    config, secret_files = parse_providers(example(secrets), "providers.yaml")
    stub, aggregator, gateway = (config.providers[n] for n in ("stub", "aggregator", "gateway"))
    assert isinstance(stub, FabriqueProvider)
    assert stub.token is not None and stub.token.get_secret_value() == "stub-jwt"
    assert stub.max_tps is None
    assert isinstance(aggregator, SmppProvider)
    assert (aggregator.host, aggregator.port, aggregator.system_id) == (
        "127.0.0.1",
        2775,
        "mailing",
    )
    assert aggregator.password.get_secret_value() == "s3cret"
    assert (aggregator.binds, aggregator.window, aggregator.max_tps) == (1, 32, 100.0)
    assert isinstance(gateway, KannelProvider)
    assert gateway.password.get_secret_value() == "kannel-secret"
    assert gateway.callback_base_url == "http://127.0.0.1:8000"
    assert sorted(secret_files) == sorted(secrets.values())


def test_smpp_defaults_when_absent(secrets: dict[str, Path]) -> None:
    text = """\
    providers:
      - {name: a, kind: smpp, host: smsc, system_id: x, password: p, source_addr: "79000000000"}
    routes:
      - {operators: ["*"], via: [a]}
    """
    config, _ = parse_providers(textwrap.dedent(text))
    provider = config.providers["a"]
    assert isinstance(provider, SmppProvider)
    assert (provider.port, provider.binds, provider.window, provider.max_tps) == (2775, 1, 32, None)


def test_routes_exact_code_before_the_wildcard(secrets: dict[str, Path]) -> None:
    config, _ = parse_providers(example(secrets))
    assert [p.name for p in config.route_for("901")] == ["aggregator", "stub"]
    assert [p.name for p in config.route_for("999")] == ["gateway"]
    # The wildcard wins nothing over a code named elsewhere, whatever the order in the file.
    text = """\
    providers:
      - {name: a, kind: fabrique, url: "http://a"}
      - {name: b, kind: fabrique, url: "http://b"}
    routes:
      - {operators: ["*"], via: [a]}
      - {operators: ["900"], via: [b, a]}
    """
    config, _ = parse_providers(textwrap.dedent(text))
    assert [p.name for p in config.route_for("900")] == ["b", "a"]
    assert [p.name for p in config.route_for("901")] == ["a"]


def test_without_a_wildcard_an_unrouted_code_has_no_provider() -> None:
    text = """\
    providers:
      - {name: a, kind: fabrique, url: "http://a"}
    routes:
      - {operators: ["900"], via: [a]}
    """
    config, _ = parse_providers(textwrap.dedent(text))
    assert config.route_for("901") == []


def test_best_route() -> None:
    text = """\
    providers:
      - {name: a, kind: fabrique, url: "http://a"}
      - {name: b, kind: fabrique, url: "http://b"}
    routes:
      - operators: ["900"]
        via: best [b, a]
    """
    config, _ = parse_providers(textwrap.dedent(text))
    route = config.route_of("900")
    assert route is not None and route.best and route.via == ("b", "a")
    assert [p.name for p in config.route_for("900")] == ["b", "a"]


def test_secrets_never_show_in_reprs(secrets: dict[str, Path]) -> None:
    config, _ = parse_providers(example(secrets))
    shown = repr(config) + str(config) + "".join(repr(p) for p in config.providers.values())
    for secret in ("stub-jwt", "s3cret", "kannel-secret", "callback-secret"):
        assert secret not in shown


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("providers: [\n", 2, "not valid YAML"),
        ("", 1, "empty"),
        ("providers: []\nroutes: []\n", 1, "providers is empty"),
        (
            """\
            providers:
              - name: Bad_Name
                kind: fabrique
                url: http://a
            routes: []
            """,
            2,
            "must match",
        ),
        (
            """\
            providers:
              - {name: a, kind: fabrique, url: "http://a"}
              - {name: a, kind: fabrique, url: "http://b"}
            routes:
              - {operators: ["*"], via: [a]}
            """,
            3,
            "used twice",
        ),
        (
            """\
            providers:
              - name: a
                kind: telegraph
            routes: []
            """,
            3,
            "not one of",
        ),
        (
            """\
            providers:
              - name: a
                kind: smpp
                host: smsc
                system_id: x
                password: p
                source_addr: X
                windw: 10
            routes: []
            """,
            8,
            "unknown key `windw`",
        ),
        (
            """\
            providers:
              - name: a
                kind: smpp
                host: smsc
                system_id: x
                password: p
                source_addr: X
                binds: 0
            routes: []
            """,
            8,
            "binds must be a whole number",
        ),
        (
            """\
            providers:
              - name: a
                kind: smpp
                host: smsc
                system_id: x
                source_addr: X
            routes: []
            """,
            2,
            "needs `password_file`",
        ),
        (
            """\
            providers:
              - name: a
                kind: fabrique
                url: http://a
                token: t
                token_file: /x
            routes: []
            """,
            6,
            "not both",
        ),
        (
            """\
            providers:
              - name: a
                kind: fabrique
                url: http://a
                token_file: /nonexistent/token
            routes: []
            """,
            5,
            "cannot read /nonexistent/token",
        ),
        (
            """\
            providers:
              - {name: a, kind: fabrique, url: "ftp://a"}
            routes: []
            """,
            2,
            "http:// or https://",
        ),
        (
            """\
            providers:
              - {name: a, kind: fabrique, url: "http://a", max_tps: 0}
            routes: []
            """,
            2,
            "max_tps must be a number above 0",
        ),
        (
            """\
            providers:
              - {name: a, kind: fabrique, url: "http://a"}
            routes:
              - operators: ["900"]
                via: [a, nobody]
            """,
            5,
            "no provider named 'nobody'",
        ),
        (
            """\
            providers:
              - {name: a, kind: fabrique, url: "http://a"}
            routes:
              - operators: ["900", "90x"]
                via: [a]
            """,
            4,
            "not a 3-digit code",
        ),
        (
            """\
            providers:
              - {name: a, kind: fabrique, url: "http://a"}
            routes:
              - {operators: ["900"], via: [a]}
              - {operators: ["*", "900"], via: [a]}
            """,
            5,
            "routed twice (also on line 4)",
        ),
        (
            """\
            providers:
              - {name: a, kind: fabrique, url: "http://a"}
            routes:
              - operators: ["900"]
                via: better [a]
            """,
            5,
            "`best [a, b]`",
        ),
        (
            """\
            providers:
              - {name: a, kind: fabrique, url: "http://a"}
            routes:
              - operators: ["900"]
            """,
            4,
            "needs `via`",
        ),
        (
            """\
            providers:
              - {name: a, kind: fabrique, url: "http://a"}
            routes: []
            providers: []
            """,
            4,
            "given twice",
        ),
        (
            """\
            providers:
              - {name: a, kind: fabrique, url: "http://a"}
            routes:
              - {operators: ["*"], via: [a]}
            route:
            """,
            5,
            "unknown top-level key `route`",
        ),
    ],
)
def test_invalid_files_name_the_line(text: str, line: int, words: str) -> None:
    error = error_of(text)
    assert error.line == line, str(error)
    assert words in str(error)
    assert str(error).startswith(f"providers.yaml:{line}: ")


def test_smpp_passwords_fit_smpp() -> None:
    error = error_of(
        """\
        providers:
          - {name: a, kind: smpp, host: h, system_id: x, source_addr: X, password: 123456789}
        routes: []
        """
    )
    assert error.line == 2 and "at most 8 characters" in str(error)
    assert "123456789" not in str(error)


def test_errors_do_not_echo_secrets() -> None:
    error = error_of(
        """\
        providers:
          - {name: a, kind: smpp, host: h, system_id: x, password: hunter2, source_addr: X, port: 0}
        routes: []
        """
    )
    assert "port" in str(error)
    assert "hunter2" not in str(error)


def test_fallback_is_one_default_provider_for_every_operator(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    source = ProvidersSource(None, provider_url="http://stub:8090", provider_token_file=token_file)
    config = source.current
    [provider] = config.route_for("900")
    assert isinstance(provider, FabriqueProvider)
    assert provider.name == "default" and provider.url == "http://stub:8090"
    assert provider.token == SecretStr("file-token")
    assert config.route_for("123") == [provider]
    # Token rotation: the token file is re-read when it changes.
    token_file.write_text("rotated\n")
    bump(token_file)
    assert source.refresh()
    assert source.current.providers["default"].token == SecretStr("rotated")  # type: ignore[union-attr]


def test_the_file_wins_over_provider_url_with_a_warning(
    tmp_path: Path, secrets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(example(secrets))
    source = ProvidersSource(path, provider_url="http://stub:8090", provider_token="t0ken")
    assert "default" not in source.current.providers
    logged = capsys.readouterr()
    assert "PROVIDER_URL / PROVIDER_TOKEN(_FILE) are ignored" in logged.out + logged.err
    assert "t0ken" not in logged.out + logged.err


def bump(path: Path) -> None:
    """A new mtime even within the filesystem's timestamp granularity."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_reload_picks_up_changes_and_keeps_the_last_good_file(
    tmp_path: Path, secrets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(example(secrets))
    changes: list[object] = []
    source = ProvidersSource(path, on_change=changes.append)
    assert not source.refresh()  # nothing changed

    # A route change applies on the next refresh.
    path.write_text(example(secrets).replace("via: [aggregator, stub]", "via: [stub]"))
    bump(path)
    assert source.refresh()
    assert [p.name for p in source.current.route_for("900")] == ["stub"]
    assert len(changes) == 1

    # An invalid file: logged with its line, the last good configuration stays.
    good = source.current
    path.write_text(example(secrets).replace("window: 32", "window: lots"))
    bump(path)
    assert not source.refresh()
    assert source.current is good
    assert source.last_error is not None and source.last_error.line == 14
    logged = capsys.readouterr()
    assert "keeping the last good one" in logged.out + logged.err
    assert not source.refresh()  # reported once, not on every check

    # A rotated secret file counts as a change too.
    path.write_text(example(secrets))
    bump(path)
    assert source.refresh()
    assert source.last_error is None
    secrets["PASSWORD_FILE"].write_text("n3w\n")
    bump(secrets["PASSWORD_FILE"])
    assert source.refresh()
    aggregator = source.current.providers["aggregator"]
    assert isinstance(aggregator, SmppProvider)
    assert aggregator.password.get_secret_value() == "n3w"

    # A file removed while running: the last good one stays.
    path.unlink()
    assert not source.refresh()
    assert source.current.providers["aggregator"] == aggregator


def test_an_invalid_file_at_start_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text("providers: {}\nroutes: []\n")
    with pytest.raises(ProvidersFileError, match=r"providers\.yaml:1: providers must be a list"):
        ProvidersSource(path)


def test_from_the_services_settings(
    tmp_path: Path, secrets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.providers import providers_source
    from shared.settings import ApiSettings, SenderSettings

    path = tmp_path / "providers.yaml"
    path.write_text(example(secrets))
    sender = providers_source(SenderSettings(providers_file=path))
    api = providers_source(ApiSettings(providers_file=path))
    assert sender.current == api.current
    assert sorted(sender.current.providers) == ["aggregator", "gateway", "stub"]
    assert "are ignored" not in capsys.readouterr().out  # PROVIDER_URL's default is no setting
    both = providers_source(SenderSettings(providers_file=path, provider_url="http://stub:1"))
    assert "default" not in both.current.providers
    assert "are ignored" in capsys.readouterr().out
    fallback = providers_source(SenderSettings(provider_url="http://stub:1"))
    assert [p.url for p in fallback.current.route_for("900")] == ["http://stub:1"]  # type: ignore[union-attr]


@pytest.mark.parametrize("kannel_port", [13113, None])
def test_make_runs_providers_file_is_valid(kannel_port: int | None) -> None:
    from scripts.devrun import dev_providers

    text = dev_providers("http://127.0.0.1:8090", 2775, kannel_port, "http://127.0.0.1:8000", "t")
    config, _ = parse_providers(text, "run/providers.yaml")
    assert [p.name for p in config.route_for("900")] == ["aggregator", "stub"]
    expected = ["gateway", "stub"] if kannel_port else ["stub"]
    assert [p.name for p in config.route_for("907")] == expected
    assert [p.name for p in config.route_for("123")] == ["stub"]
