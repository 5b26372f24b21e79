"""Process entry point: `python -m services.reporting.main`."""

from kit.serve import serve
from services.reporting.app import create_app
from services.reporting.config import Settings

if __name__ == "__main__":
    serve(create_app, Settings())
