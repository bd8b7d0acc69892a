"""The api's copy of the providers file (PROVIDERS_FILE, docs/PROVIDERS.md): read at start (an
invalid file stops the api, as it stops the sender) and re-read when it or a secret file it
names changes (checked at most once a second, on use: a stat per file)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from shared.providers import ProvidersConfig, ProvidersSource, providers_source
from shared.settings import ApiSettings

CHECK_EVERY_S = 1.0


class ApiProviders:
    def __init__(self, settings: ApiSettings) -> None:
        self.source: ProvidersSource = providers_source(settings)
        self._checked = time.monotonic()

    @property
    def current(self) -> ProvidersConfig:
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY_S:
            self._checked = now
            self.source.refresh()
        return self.source.current


def _providers(request: Request) -> ProvidersConfig:
    providers: ApiProviders = request.app.state.providers
    return providers.current


ProvidersDep = Annotated[ProvidersConfig, Depends(_providers)]
