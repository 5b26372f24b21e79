"""The API gateway: OAuth2 client store and token endpoint, JWKS, client management, routing, rate limits.

`gateway.app.create_app(settings)` builds it; `python -m gateway.main` runs it (DESIGN §1, §3, §6).
"""
