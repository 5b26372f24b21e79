"""Alembic environment of the transactions service."""

from kit.migrations import run_env
from services.transactions.models import metadata

run_env(metadata)
