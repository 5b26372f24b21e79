"""Process entry point shared by every `main.py`: JSON logs, then uvicorn on the configured host and port."""

from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from kit.config import ServiceSettings
from kit.logging import configure_logging

__all__ = ["serve"]


def serve(create_app: Callable[[ServiceSettings], FastAPI], settings: ServiceSettings) -> None:
    """Run one service until SIGINT/SIGTERM (uvicorn drains in-flight requests first)."""
    configure_logging(settings.log_level, json=settings.log_json, service=settings.service_name)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
