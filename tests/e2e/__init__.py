"""End-to-end tests: the whole suite through the gateway, in-process and as real processes."""
