"""Additional registry services: mitigation outcomes, authorizations and first transfers into the IR."""
