"""The partner gateway: /v1 endpoints over the partner's digital-goods API (seed 000)."""
