"""Introspection: is this token genuine? The pure validation core, the key sets it reads, the
providers, assurance levels, the verified-token cache and the HTTP handler."""
