"""Deploy tests."""
