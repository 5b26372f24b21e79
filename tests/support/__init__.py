"""Test support: databases on both backends, tokens, and in-process apps with their lifespan."""
