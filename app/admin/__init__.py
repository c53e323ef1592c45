"""Web admin (sqladmin) at /admin: log in with an API key that has the admin scope."""
