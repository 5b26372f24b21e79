"""Benchmarks that print figures; they are not tests and never gate CI."""
