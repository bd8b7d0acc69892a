"""`python -m services.api`: serve the admin API with uvicorn."""

from __future__ import annotations

import uvicorn

from services.api.app import create_app
from shared.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


if __name__ == "__main__":
    main()
