"""Alembic environment of the ars service."""

from kit.migrations import run_env
from services.ars.models import metadata

run_env(metadata)
