"""Alembic environment of the party_sections service."""

from kit.migrations import run_env
from services.party_sections.models import metadata

run_env(metadata)
