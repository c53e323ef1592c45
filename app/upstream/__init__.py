"""The resilient upstream client: circuit breaker, OAuth token cache, error-code mapping."""
