"""Tokens for calling other APIs: POST /api/v1/token and /api/v1/token/exchange."""
