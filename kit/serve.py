"""Process entry point shared by every `main.py`: JSON logs, then uvicorn on the configured host and port.

With `REGISTRY_<SERVICE>_WORKERS` above 1, uvicorn's supervisor starts that many processes on the one port;
each builds its own app from the same factory (`_worker_app`), so background loops run in every worker:
they are written for that (the outbox relay and journal sealer serialise on a row lock; caches are per
process and kept by the feeds, see services/transactions/directory.py).
"""

import importlib
import os
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from kit.config import ServiceSettings
from kit.logging import configure_logging

__all__ = ["serve"]

_FACTORY_VARIABLE = "REGISTRY_SERVE_FACTORY"


def _worker_app() -> FastAPI:
    """The app of one worker process: the factory named by the supervisor, with the same logging."""
    module, _, name = os.environ[_FACTORY_VARIABLE].partition(":")
    app: FastAPI = getattr(importlib.import_module(module), name)()
    settings: ServiceSettings = app.state.settings
    configure_logging(settings.log_level, json=settings.log_json, service=settings.service_name)
    return app


def serve(create_app: Callable[[ServiceSettings], FastAPI], settings: ServiceSettings) -> None:
    """Run one service until SIGINT/SIGTERM (uvicorn drains in-flight requests first)."""
    configure_logging(settings.log_level, json=settings.log_json, service=settings.service_name)
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
    }
    if settings.workers > 1:
        os.environ[_FACTORY_VARIABLE] = f"{create_app.__module__}:{create_app.__name__}"
        uvicorn.run("kit.serve:_worker_app", factory=True, workers=settings.workers, **options)  # type: ignore[arg-type]
        return
    uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
