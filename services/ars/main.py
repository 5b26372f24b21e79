"""Process entry point: `python -m services.ars.main`."""

from kit.serve import serve
from services.ars.app import create_app
from services.ars.config import Settings

if __name__ == "__main__":
    serve(create_app, Settings())
