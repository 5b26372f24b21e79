"""The registry's services; each owns its database and is reached through the gateway."""
