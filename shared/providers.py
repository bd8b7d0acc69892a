"""Providers and routes: PROVIDERS_FILE (YAML), or one `default` provider from PROVIDER_URL.

`load_providers_file` parses and validates the file; every error names the file's line.
`ProvidersSource` keeps the configuration current: it re-reads the file (and the secret files
it names) when they change and keeps the last good configuration when a new one is invalid.
`ProvidersConfig.route_for(operator_code)` gives the providers a message may go to, in order.
Secrets are pydantic `SecretStr`: their repr and str never show the value. docs/PROVIDERS.md.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog
import yaml
from pydantic import SecretStr

log = structlog.get_logger("providers")

ProviderKind = Literal["fabrique", "smpp", "kannel"]
KINDS: tuple[ProviderKind, ...] = ("fabrique", "smpp", "kannel")
NAME_RE = re.compile(r"[a-z0-9-]{1,32}")
OPERATOR_RE = re.compile(r"\d{3}")
WILDCARD = "*"
# ProvidersConfig.source without a file: PROVIDER_URL as the one `default` provider.
FALLBACK_SOURCE = "PROVIDER_URL"
# The currency of a price_per_segment given without one.
DEFAULT_CURRENCY = "RUB"
DEFAULT_NAME = "default"
_BEST_RE = re.compile(r"best\s*\[(?P<names>[^\]]*)\]")


class ProvidersFileError(ValueError):
    """An invalid providers file: `line` is 1-based (None when the file could not be read)."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")


@dataclass(frozen=True, slots=True)
class FabriqueProvider:
    """The task's API: POST {url}/send/{msgId}, JSON {id, phone, text}, Bearer token."""

    name: str
    url: str
    token: SecretStr | None = None
    max_tps: float | None = None
    price_per_segment: float | None = None  # for the pre-send check's cost
    currency: str = DEFAULT_CURRENCY
    kind: Literal["fabrique"] = "fabrique"


@dataclass(frozen=True, slots=True)
class SmppProvider:
    """An SMSC over SMPP 3.4: `binds` transceiver binds per sender replica."""

    name: str
    host: str
    port: int
    system_id: str
    password: SecretStr
    source_addr: str
    binds: int = 1
    window: int = 32
    max_tps: float | None = None
    system_type: str = ""
    enquire_link_s: float = 30.0
    price_per_segment: float | None = None  # for the pre-send check's cost
    currency: str = DEFAULT_CURRENCY
    kind: Literal["smpp"] = "smpp"


@dataclass(frozen=True, slots=True)
class KannelProvider:
    """Kannel's smsbox `cgi-bin/sendsms`; receipts come back through `dlr-url` to our api."""

    name: str
    url: str
    username: str
    password: SecretStr
    source_addr: str
    callback_base_url: str
    # Signs the dlr-url of each message, so only the gateway can report its receipts.
    callback_secret: SecretStr
    max_tps: float | None = None
    price_per_segment: float | None = None  # for the pre-send check's cost
    currency: str = DEFAULT_CURRENCY
    kind: Literal["kannel"] = "kannel"


Provider = FabriqueProvider | SmppProvider | KannelProvider


@dataclass(frozen=True, slots=True)
class Route:
    operators: tuple[str, ...]  # three-digit codes, or ("*",) for every other code
    via: tuple[str, ...]  # provider names, in order of preference
    best: bool = False  # `via: best [a, b]`: by measured delivered rate, not in order
    line: int | None = None


@dataclass(frozen=True)
class ProvidersConfig:
    providers: dict[str, Provider]
    routes: tuple[Route, ...]
    source: str  # the file's path, or "PROVIDER_URL"
    _by_code: dict[str, Route] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for route in self.routes:
            for code in route.operators:
                self._by_code.setdefault(code, route)

    def route_of(self, operator_code: str) -> Route | None:
        """The route for a code: the one naming it, else the `*` route, else none."""
        return self._by_code.get(operator_code) or self._by_code.get(WILDCARD)

    def route_for(self, operator_code: str) -> list[Provider]:
        """The providers a message for this operator code may go to, in the route's order
        (for a `best` route, the order written; the sender ranks them by delivered rate).
        Empty when no route covers the code: such messages wait."""
        route = self.route_of(operator_code)
        return [] if route is None else [self.providers[name] for name in route.via]


# --- the file ----------------------------------------------------------------------------------


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Reader:
    """Walks PyYAML's node tree (which keeps each node's line) into checked values."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.secret_files: list[Path] = []
        self._loader = yaml.SafeLoader(text)

    def close(self) -> None:
        self._loader.dispose()

    def fail(self, node: yaml.Node | int | None, message: str) -> ProvidersFileError:
        line = _line(node) if isinstance(node, yaml.Node) else node
        return ProvidersFileError(self.path, line, message)

    def root(self) -> yaml.Node:
        try:
            node = self._loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise self.fail(
                mark.line + 1 if mark else None, f"not valid YAML: {exc.problem or exc}"
            ) from None
        except yaml.YAMLError as exc:
            raise self.fail(None, f"not valid YAML: {exc}") from None
        if node is None:
            raise self.fail(1, "the file is empty; it needs `providers:` and `routes:`")
        return node

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping of keys to values")
        items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self._loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise self.fail(key_node, f"{what}: keys must be text, not {key!r}")
            if key in items:
                raise self.fail(key_node, f"{what}: `{key}` is given twice")
            items[key] = (key_node, value_node)
        return items

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        return list(node.value)

    def scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value")
        return self._loader.construct_object(node, deep=True)

    def text(self, node: yaml.Node, what: str, *, pattern: re.Pattern[str] | None = None) -> str:
        value = self.scalar(node, what)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(node, f"{what} must be non-empty text")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(node, f"{what} {value!r} must match {pattern.pattern}")
        return value

    def integer(self, node: yaml.Node, what: str, low: int, high: int) -> int:
        value = self.scalar(node, what)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(node, f"{what} must be a whole number from {low} to {high}")
        return value

    def positive(self, node: yaml.Node, what: str) -> float:
        value = self.scalar(node, what)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise self.fail(node, f"{what} must be a number above 0")
        return float(value)

    def url(self, node: yaml.Node, what: str) -> str:
        value = self.text(node, what)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(node, f"{what} {value!r} must be an http:// or https:// URL")
        return value

    def secret(
        self,
        entry: dict[str, tuple[yaml.Node, yaml.Node]],
        key: str,
        what: str,
        at: yaml.Node,
        *,
        required: bool,
    ) -> SecretStr | None:
        """`key` inline or `key_file` (a file whose content, stripped, is the secret)."""
        inline, from_file = entry.get(key), entry.get(f"{key}_file")
        if inline and from_file:
            raise self.fail(from_file[0], f"{what}: give `{key}` or `{key}_file`, not both")
        if inline:
            node = inline[1]
            # The characters as written (a YAML number stays as typed, leading zeros and all).
            if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
                raise self.fail(node, f"{what}.{key} must be non-empty text")
            return SecretStr(str(node.value))
        if from_file:
            path = Path(self.text(from_file[1], f"{what}.{key}_file"))
            self.secret_files.append(path)
            try:
                value = path.read_text().strip()
            except OSError as exc:
                raise self.fail(
                    from_file[1], f"{what}.{key}_file: cannot read {path}: {exc.strerror}"
                ) from None
            if not value:
                raise self.fail(from_file[1], f"{what}.{key}_file: {path} is empty")
            return SecretStr(value)
        if required:
            raise self.fail(at, f"{what} needs `{key}_file` (or `{key}`)")
        return None


_COMMON_KEYS = {"name", "kind", "max_tps", "price_per_segment", "currency"}
_KEYS: dict[str, set[str]] = {
    "fabrique": _COMMON_KEYS | {"url", "token", "token_file"},
    "smpp": _COMMON_KEYS
    | {"host", "port", "system_id", "password", "password_file", "source_addr", "binds"}
    | {"window", "system_type", "enquire_link_s"},
    "kannel": _COMMON_KEYS
    | {"url", "username", "password", "password_file", "source_addr", "callback_base_url"}
    | {"callback_secret", "callback_secret_file"},
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "fabrique": ("url",),
    "smpp": ("host", "system_id", "source_addr"),
    "kannel": ("url", "username", "source_addr", "callback_base_url"),
}
_CURRENCY = re.compile(r"[A-Za-z]{3}")
# SMPP 3.4's field sizes (C-octet strings, the terminating NUL not counted).
_SMPP_SYSTEM_ID = re.compile(r"[\x21-\x7e]{1,15}")
_SMPP_SOURCE_ADDR = re.compile(r"(\+?\d{1,20}|[\x20-\x7e]{1,11})")


def _prices(reader: _Reader, entry: dict[str, Any], what: str) -> dict[str, Any]:
    """`price_per_segment` (a number, 0 or more) and its `currency` (three letters)."""
    prices: dict[str, Any] = {}
    if "price_per_segment" in entry:
        node = entry["price_per_segment"][1]
        price = reader.scalar(node, f"{what}.price_per_segment")
        if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
            raise reader.fail(node, f"{what}.price_per_segment must be a number, 0 or more")
        prices["price_per_segment"] = float(price)
    if "currency" in entry:
        prices["currency"] = reader.text(
            entry["currency"][1], f"{what}.currency", pattern=_CURRENCY
        ).upper()
    return prices


def _provider(reader: _Reader, node: yaml.Node, index: int) -> Provider:
    what = f"providers[{index}]"
    entry = reader.mapping(node, what)
    if "name" not in entry:
        raise reader.fail(node, f"{what} needs a `name`")
    name = reader.text(entry["name"][1], f"{what}.name", pattern=NAME_RE)
    what = f"provider {name}"
    if "kind" not in entry:
        raise reader.fail(node, f"{what} needs a `kind` ({' | '.join(KINDS)})")
    kind = reader.text(entry["kind"][1], f"{what}.kind")
    if kind not in KINDS:
        raise reader.fail(entry["kind"][1], f"{what}.kind {kind!r} is not one of {KINDS}")
    for key, (key_node, _) in entry.items():
        if key not in _KEYS[kind]:
            known = ", ".join(sorted(_KEYS[kind]))
            raise reader.fail(key_node, f"{what}: unknown key `{key}` for kind {kind} ({known})")
    for key in _REQUIRED[kind]:
        if key not in entry:
            raise reader.fail(node, f"{what} (kind {kind}) needs `{key}`")

    def value(key: str) -> yaml.Node:
        return entry[key][1]

    max_tps = reader.positive(value("max_tps"), f"{what}.max_tps") if "max_tps" in entry else None
    prices = _prices(reader, entry, what)
    if kind == "fabrique":
        return FabriqueProvider(
            name=name,
            url=reader.url(value("url"), f"{what}.url"),
            token=reader.secret(entry, "token", what, node, required=False),
            max_tps=max_tps,
            **prices,
        )
    if kind == "smpp":
        password = reader.secret(entry, "password", what, node, required=True)
        assert password is not None
        if len(password.get_secret_value()) > 8:
            at = entry.get("password") or entry["password_file"]
            raise reader.fail(at[1], f"{what}: an SMPP 3.4 password is at most 8 characters")
        return SmppProvider(
            name=name,
            host=reader.text(value("host"), f"{what}.host"),
            port=reader.integer(value("port"), f"{what}.port", 1, 65535)
            if "port" in entry
            else 2775,
            system_id=reader.text(value("system_id"), f"{what}.system_id", pattern=_SMPP_SYSTEM_ID),
            password=password,
            source_addr=reader.text(
                value("source_addr"), f"{what}.source_addr", pattern=_SMPP_SOURCE_ADDR
            ),
            binds=reader.integer(value("binds"), f"{what}.binds", 1, 64) if "binds" in entry else 1,
            window=reader.integer(value("window"), f"{what}.window", 1, 4096)
            if "window" in entry
            else 32,
            max_tps=max_tps,
            system_type=str(reader.scalar(value("system_type"), f"{what}.system_type") or "")
            if "system_type" in entry
            else "",
            enquire_link_s=reader.positive(value("enquire_link_s"), f"{what}.enquire_link_s")
            if "enquire_link_s" in entry
            else 30.0,
            **prices,
        )
    password = reader.secret(entry, "password", what, node, required=True)
    callback_secret = reader.secret(entry, "callback_secret", what, node, required=True)
    assert password is not None and callback_secret is not None
    return KannelProvider(
        name=name,
        url=reader.url(value("url"), f"{what}.url"),
        username=reader.text(value("username"), f"{what}.username"),
        password=password,
        source_addr=reader.text(value("source_addr"), f"{what}.source_addr"),
        callback_base_url=reader.url(value("callback_base_url"), f"{what}.callback_base_url"),
        callback_secret=callback_secret,
        max_tps=max_tps,
        **prices,
    )


def _via(reader: _Reader, node: yaml.Node, what: str) -> tuple[tuple[str, ...], bool]:
    if isinstance(node, yaml.ScalarNode):
        text = reader.scalar(node, what)
        match = _BEST_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise reader.fail(node, f"{what} must be a list of providers or `best [a, b]`")
        names = tuple(n.strip() for n in match["names"].split(",") if n.strip())
        return names, True
    items = reader.sequence(node, what)
    return tuple(reader.text(item, f"{what} entry") for item in items), False


def _route(reader: _Reader, node: yaml.Node, index: int, providers: dict[str, Provider]) -> Route:
    what = f"routes[{index}]"
    entry = reader.mapping(node, what)
    for key, (key_node, _) in entry.items():
        if key not in ("operators", "via"):
            raise reader.fail(key_node, f"{what}: unknown key `{key}` (operators, via)")
    for key in ("operators", "via"):
        if key not in entry:
            raise reader.fail(node, f"{what} needs `{key}`")
    operators_node = entry["operators"][1]
    operators: list[str] = []
    for item in reader.sequence(operators_node, f"{what}.operators"):
        code = reader.scalar(item, f"{what}.operators entry")
        code = str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None
        if code is None or not (code == WILDCARD or OPERATOR_RE.fullmatch(code)):
            raise reader.fail(item, f'{what}.operators: {code!r} is not a 3-digit code or "*"')
        if code in operators:
            raise reader.fail(item, f"{what}.operators: {code} is listed twice")
        operators.append(code)
    if not operators:
        raise reader.fail(operators_node, f"{what}.operators is empty")
    via_node = entry["via"][1]
    via, best = _via(reader, via_node, f"{what}.via")
    if not via:
        raise reader.fail(via_node, f"{what}.via names no provider")
    for name in via:
        if name not in providers:
            raise reader.fail(via_node, f"{what}.via: no provider named {name!r}")
    if len(set(via)) != len(via):
        raise reader.fail(via_node, f"{what}.via names a provider twice")
    return Route(tuple(operators), via, best, _line(node))


def parse_providers(
    text: str, path: Path | str = "<providers>"
) -> tuple[ProvidersConfig, list[Path]]:
    """The configuration in `text`, and the secret files it read (for the reloader)."""
    reader = _Reader(Path(path), text)
    try:
        root = reader.mapping(reader.root(), "the file")
        for key, (key_node, _) in root.items():
            if key not in ("providers", "routes"):
                raise reader.fail(key_node, f"unknown top-level key `{key}` (providers, routes)")
        for key in ("providers", "routes"):
            if key not in root:
                raise reader.fail(1, f"the file needs `{key}:`")
        providers: dict[str, Provider] = {}
        provider_nodes = reader.sequence(root["providers"][1], "providers")
        if not provider_nodes:
            raise reader.fail(root["providers"][1], "providers is empty")
        for index, node in enumerate(provider_nodes):
            provider = _provider(reader, node, index)
            if provider.name in providers:
                raise reader.fail(node, f"provider name {provider.name!r} is used twice")
            providers[provider.name] = provider
        routes = [
            _route(reader, node, index, providers)
            for index, node in enumerate(reader.sequence(root["routes"][1], "routes"))
        ]
        if not routes:
            raise reader.fail(root["routes"][1], "routes is empty")
        seen: dict[str, int] = {}
        for route in routes:
            for code in route.operators:
                if code in seen:
                    raise reader.fail(
                        route.line, f"operator {code} is routed twice (also on line {seen[code]})"
                    )
                seen[code] = route.line or 0
        return ProvidersConfig(providers, tuple(routes), str(path)), reader.secret_files
    finally:
        reader.close()


def load_providers_file(path: Path) -> tuple[ProvidersConfig, list[Path]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvidersFileError(path, None, f"cannot read: {exc}") from None
    return parse_providers(text, path)


def default_providers(url: str, token: SecretStr | None) -> ProvidersConfig:
    """No PROVIDERS_FILE: today's PROVIDER_URL/PROVIDER_TOKEN as `default` for every operator."""
    provider = FabriqueProvider(name=DEFAULT_NAME, url=url, token=token)
    return ProvidersConfig(
        {DEFAULT_NAME: provider},
        (Route((WILDCARD,), (DEFAULT_NAME,)),),
        FALLBACK_SOURCE,
    )


# --- keeping it current ------------------------------------------------------------------------


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class ProvidersSource:
    """The current providers: the file's (re-read on change; an invalid new version is logged
    and the last good one kept) or, without a file, the PROVIDER_URL fallback.

    The fallback's token file is re-read too (token rotation), as `TokenSource` does.
    An invalid file at start raises `ProvidersFileError`: a service does not start on it.
    """

    def __init__(
        self,
        providers_file: Path | None,
        *,
        provider_url: str | None = None,
        provider_token: SecretStr | str | None = None,
        provider_token_file: Path | None = None,
        on_change: Callable[[ProvidersConfig], None] | None = None,
        fallback_given: bool | None = None,
    ) -> None:
        self._file = providers_file
        self._fallback_url = provider_url
        self._fallback_token = (
            SecretStr(provider_token) if isinstance(provider_token, str) else provider_token
        )
        self._fallback_token_file = provider_token_file
        self._on_change = on_change
        self._stamps: dict[Path, float | None] = {}
        self.last_error: ProvidersFileError | None = None
        if fallback_given is None:
            fallback_given = bool(provider_url or provider_token or provider_token_file)
        if providers_file is not None and fallback_given:
            log.warning(
                "PROVIDERS_FILE is set: PROVIDER_URL / PROVIDER_TOKEN(_FILE) are ignored",
                providers_file=str(providers_file),
            )
        self._config = self._load()

    @property
    def current(self) -> ProvidersConfig:
        return self._config

    def _watched(self) -> Iterable[Path]:
        return self._stamps.keys()

    def _load(self) -> ProvidersConfig:
        if self._file is None:
            token = self._fallback_token
            watched: list[Path] = []
            if self._fallback_token_file is not None:
                watched.append(self._fallback_token_file)
                try:
                    token = SecretStr(self._fallback_token_file.read_text().strip()) or token
                except OSError:
                    pass  # as TokenSource: a missing token file keeps what there was
            self._stamps = {path: _mtime(path) for path in watched}
            return default_providers(self._fallback_url or "http://127.0.0.1:8090", token)
        stamps = {self._file: _mtime(self._file)}
        config, secret_files = load_providers_file(self._file)
        stamps.update({path: _mtime(path) for path in secret_files})
        self._stamps = stamps
        return config

    def refresh(self) -> bool:
        """Re-read if the file or a secret file it names changed; True when the configuration
        was replaced. Cheap when nothing changed (a stat per watched file)."""
        if all(_mtime(path) == stamp for path, stamp in self._stamps.items()):
            return False
        previous = dict(self._stamps)
        try:
            config = self._load()
        except ProvidersFileError as exc:
            # Remember the stamps that failed, so a broken file is reported once, not per check.
            self._stamps = {path: _mtime(path) for path in previous}
            self.last_error = exc
            log.error(
                "providers file invalid; keeping the last good one",
                error=str(exc),
                providers_file=str(self._file),
            )
            return False
        self.last_error = None
        if config == self._config:
            return False
        self._config = config
        log.info(
            "providers reloaded",
            source=config.source,
            providers=sorted(config.providers),
            routes=len(config.routes),
        )
        if self._on_change is not None:
            self._on_change(config)
        return True

    async def watch(self, interval_s: float = 1.0) -> None:
        """Check for changes every `interval_s` until cancelled (a task of the service)."""
        while True:
            await asyncio.sleep(interval_s)
            self.refresh()


def providers_source(
    settings: Any, on_change: Callable[[ProvidersConfig], None] | None = None
) -> ProvidersSource:
    """The source a service's settings describe: PROVIDERS_FILE, else (the sender's)
    PROVIDER_URL / PROVIDER_TOKEN(_FILE)."""
    fallback = ("provider_url", "provider_token", "provider_token_file")
    return ProvidersSource(
        settings.providers_file,
        provider_url=getattr(settings, "provider_url", None),
        provider_token=getattr(settings, "provider_token", None),
        provider_token_file=getattr(settings, "provider_token_file", None),
        on_change=on_change,
        # PROVIDER_URL has a default: warn only when one of them was really given.
        fallback_given=bool(set(fallback) & settings.model_fields_set),
    )
