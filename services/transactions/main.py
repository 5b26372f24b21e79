"""Process entry point: `python -m services.transactions.main`."""

from kit.serve import serve
from services.transactions.app import create_app
from services.transactions.config import Settings

if __name__ == "__main__":
    serve(create_app, Settings())
