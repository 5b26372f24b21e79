"""Alembic migrations of this service (a package so non-editable installs ship them)."""
