"""Alembic environment of the reporting service."""

from kit.migrations import run_env
from services.reporting.models import metadata

run_env(metadata)
