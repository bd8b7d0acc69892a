"""``python -m services.provider_stub``: serve the stub on ``STUB_HOST``:``STUB_PORT``."""

import asyncio
import os

from aiohttp import web

from services.provider_stub.app import StubConfig, create_app


def main() -> None:
    host = os.environ.get("STUB_HOST", "127.0.0.1")
    port = int(os.environ.get("STUB_PORT", "8090"))
    config = StubConfig.from_env()
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    print(f"provider stub listening on http://{host}:{port}", flush=True)
    web.run_app(
        create_app(config),
        host=host,
        port=port,
        access_log=None,
        print=None,
        handler_cancellation=True,
        shutdown_timeout=1.0,
        loop=loop,
    )


if __name__ == "__main__":
    main()
