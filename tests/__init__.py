"""The registry's test suite: unit/, integration/, e2e/, contract/, deploy/."""
