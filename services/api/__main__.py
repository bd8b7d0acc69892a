"""`python -m services.api`: serve the admin API with uvicorn."""

from __future__ import annotations

import uvicorn

from services.api.app import create_app
from services.api.auth import HOW_TO_MAKE_ONE, MIN_TOKEN_LENGTH, parse_api_tokens, weak_tokens
from shared import tracing
from shared.logging import configure_logging
from shared.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    configure_logging(settings.log_level, settings.log_format)
    tracing.configure_tracing(tracing.API, settings.database_url, settings.amqp_namespace)
    if not settings.api_tokens:
        raise SystemExit("API_TOKENS is empty: set at least one admin token (make run creates one)")
    weak = weak_tokens(parse_api_tokens(t.get_secret_value() for t in settings.api_tokens))
    if weak:
        raise SystemExit(
            "API_TOKENS has weak tokens, the api does not start: "
            + "; ".join(weak)
            + f". A token is at least {MIN_TOKEN_LENGTH} random characters: {HOW_TO_MAKE_ONE}"
        )
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        # uvicorn's own lines go through the root handler that configure_logging set up.
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
