"""API clients: who may call Sluice, with which scopes, on behalf of which organisation."""
