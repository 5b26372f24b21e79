"""Process entry point: `python -m services.party_sections.main`."""

from kit.serve import serve
from services.party_sections.app import create_app
from services.party_sections.config import Settings

if __name__ == "__main__":
    serve(create_app, Settings())
