"""Alembic migrations of the gateway (a package so non-editable installs ship them)."""
