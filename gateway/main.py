"""Process entry point: `python -m gateway.main`."""

from gateway.app import create_app
from gateway.config import Settings
from kit.serve import serve

if __name__ == "__main__":
    serve(create_app, Settings())
